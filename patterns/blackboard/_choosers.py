"""How a blackboard controller picks one source among the eligible ones.

A chooser is ``async (candidates, board, ctx) -> source name``. :func:`by_priority`
is the default; :func:`model_chooser` asks a language model through the journaled
:func:`agents.call_model` seam (so replay substitutes the recorded answer).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence

from agentbus import Context
from agentbus.agents import ChatMessage, ChatModel, ChatRequest, call_model

from ._board import BoardState, Eligibility

__all__ = ["Chooser", "by_priority", "model_chooser", "ranked"]

Chooser = Callable[[Sequence[Eligibility], BoardState, Context], Awaitable[str]]


def ranked(candidates: Sequence[Eligibility]) -> list[Eligibility]:
    """Highest priority first; equal priorities by source name (a stable tie-break)."""
    return sorted(candidates, key=lambda c: (-c.priority, c.source))


async def by_priority(candidates: Sequence[Eligibility], board: BoardState, ctx: Context) -> str:
    """The eligible source with the highest priority (ties: the smallest name)."""
    return ranked(candidates)[0].source


def model_chooser(model: ChatModel, *, instructions: str = "") -> Chooser:
    """A chooser that shows the board and the candidates to ``model``.

    The model answers with structured output naming one candidate; an answer naming no
    candidate (or a failed call) falls back to :func:`by_priority`, and the fallback is
    noted in the journal.
    """
    system = instructions or (
        "You coordinate a blackboard of knowledge sources. Pick the one source whose "
        "contribution moves the board closest to its goal."
    )

    async def choose(candidates: Sequence[Eligibility], board: BoardState, ctx: Context) -> str:
        order = ranked(candidates)
        names = [c.source for c in order]
        summary = {
            "board": [
                {"kind": e.kind, "key": e.key, "data": e.data, "author": e.author}
                for e in board.items()
            ],
            "candidates": [
                {"source": c.source, "priority": c.priority, "reason": c.reason} for c in order
            ],
        }
        request = ChatRequest(
            messages=[ChatMessage.system(system), ChatMessage.user(json.dumps(summary))],
            response_schema={
                "type": "object",
                "properties": {"source": {"type": "string", "enum": names}},
                "required": ["source"],
            },
            response_schema_name="choice",
        )

        try:
            response = await call_model(ctx, model, request)
            picked = json.loads(response.text).get("source")
        except Exception as exc:
            picked = None
            await ctx.note("chooser-fallback", pattern="blackboard", error=str(exc))
        return picked if picked in names else names[0]

    return choose
