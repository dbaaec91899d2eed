"""An LLM assistant with a tool: it looks up an order and answers a customer's question.

Runs offline by default: with no model configured, ``model_from_env()`` picks the **offline
model**, a deterministic stand-in whose answers start with ``[offline model]`` — it calls the
tool and quotes its result, it does not understand the question. Set ``OPENAI_API_KEY`` (and
``OPENAI_BASE_URL`` / ``OPENAI_MODEL`` for another OpenAI-compatible server) to use a model.

    agentbus run examples/llm_assistant.py
    agentbus trace <run id>      # the model call, the tool call and the reply
    agentbus replay <run id>     # identical: model and tool answers come from the journal
"""

from __future__ import annotations

import sys

from agentbus import App, Run
from agentbus.agents import LLMAgent, Prompt, Reply, tool

ORDERS = {
    "A-1001": {"status": "shipped", "carrier": "DHL", "eta": "2025-06-03", "items": 2},
    "A-1002": {"status": "packing", "carrier": None, "eta": "2025-06-05", "items": 1},
}


@tool
def lookup_order(order_id: str) -> dict[str, object]:
    """The status, carrier and expected delivery date of an order.

    Args:
        order_id: the order number, e.g. A-1001.
    """
    order = ORDERS.get(order_id.strip().upper())
    if order is None:
        return {"error": f"no order {order_id!r}; known orders: {', '.join(sorted(ORDERS))}"}
    return {"order_id": order_id, **order}


assistant = LLMAgent(
    name="assistant",
    system_prompt=(
        "You answer questions about orders. Look the order up with the lookup_order tool "
        "before answering, and say when it will arrive."
    ),
    tools=[lookup_order],
    topic="assistant.ask",  # answers agents.Prompt with agents.Reply
)

app = App("llm-assistant", [assistant])


@app.main
async def main(run: Run) -> Reply:
    question = Prompt(text='When will my order "A-1001" arrive?')
    reply: Reply = await run.request("assistant.ask", question, expect=Reply, timeout=60)
    if reply.offline:
        # On stderr, so that `agentbus run --json` still prints only JSON.
        print("(no model configured: the offline model answered, not an LLM)", file=sys.stderr)
    return reply
