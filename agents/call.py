"""The one way an agent calls a model: through the run's journaled, replayable seam.

Every model call of :class:`agents.LLMAgent` and of the patterns' model-backed steps goes
through :func:`call_model`, so the journal holds one request shape for all of them and
``agentbus replay`` substitutes the recorded response without calling the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentbus.agents.model import ChatModel, ChatRequest, ChatResponse

if TYPE_CHECKING:
    from agentbus import Context

__all__ = ["call_model"]


async def call_model(ctx: Context, model: ChatModel, request: ChatRequest) -> ChatResponse:
    """Send ``request`` to ``model`` as a journaled ``model`` call of ``ctx``'s run.

    The journal records the request (fields left at ``None`` omitted) with the model name
    actually asked (``request.model``, else the client's) and the client's ``provider``;
    the response is recorded as :meth:`ChatResponse.model_dump` and, on replay, returned
    from the journal instead of calling the model.

    Raises whatever the model raises (an :class:`agents.ModelError`), after journaling it.
    """

    async def live() -> dict[str, Any]:
        response = await model.complete(request)
        return response.model_dump(mode="json")

    payload = request.model_dump(mode="json", exclude_none=True)
    payload["model"] = request.model or model.name
    payload["provider"] = model.provider
    raw = await ctx.invoke("model", model.name, payload, live)
    return ChatResponse.model_validate(raw)
