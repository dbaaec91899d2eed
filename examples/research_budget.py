"""A research run with a budget: every model call is reserved against the run's limits.

Runs offline by default (the offline model, see ``examples/llm_assistant.py``). The app
declares a :class:`~agentbus.Budget`, so each ``agentbus run`` of it may spend at most
2,000 model tokens and 10 model calls within 5 minutes, across every worker process.
Lower ``tokens`` (say to 50) and the run ends ``budget_exceeded`` instead: the call that
would pass the limit is not made, and the journal says which limit.

    agentbus run examples/research_budget.py
    agentbus runs                # BUDGET: tokens 61/2000, model calls 1/10, deadline ...
    agentbus trace <run id>      # the same spend in the header
"""

from __future__ import annotations

from datetime import timedelta

from agentbus import App, Budget, Run
from agentbus.agents import LLMAgent, Prompt, Reply

QUESTION = (
    "What limits how fast a tide gauge can report, which sensors measure sea level "
    "from orbit, and how are the two kinds of measurement reconciled?"
)

researcher = LLMAgent(
    name="researcher",
    system_prompt="You answer research questions in two sentences.",
    topic="research.ask",  # answers agents.Prompt with agents.Reply
)

app = App(
    "research-budget",
    [researcher],
    budget=Budget(tokens=2_000, model_calls=10, deadline=timedelta(minutes=5)),
)


@app.main
async def main(run: Run) -> dict[str, object]:
    reply: Reply = await run.request("research.ask", Prompt(text=QUESTION), expect=Reply)
    return {
        "question": QUESTION,
        "answer": reply.text,
        "tokens": reply.input_tokens + reply.output_tokens,
    }
