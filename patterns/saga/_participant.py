"""A saga participant: an agent that does one step and undoes it on request."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from agentbus import Agent, Context, UsageError

from ._messages import Compensate, Compensated, StepDone, StepRequest

__all__ = ["ActionFn", "CompensateFn", "SagaParticipant", "StepRefused"]


class StepRefused(Exception):
    """Raised by a participant's action when the step cannot be done (no seat left, card
    declined): an expected outcome. The saga gets it at once and compensates; the request
    is not retried nor dead-lettered. Anything else the action raises is an error: retried
    by the runtime, then dead-lettered, which fails the step too."""


ActionFn: TypeAlias = Callable[[StepRequest, Context], dict[str, Any] | Awaitable[dict[str, Any]]]
"""``action(request, ctx) -> result``: do the step (sync or async); raise to fail it."""
CompensateFn: TypeAlias = Callable[[Compensate, Context], Awaitable[None] | None]
"""``compensate(request, ctx)``: undo the step; ``request.result`` is what the action
returned, ``None`` when the saga did not hear back (undo it if it happened)."""


class SagaParticipant(Agent):
    """Handles a saga step (:class:`StepRequest`) and its compensation
    (:class:`Compensate`) on ``topic``, named ``name`` (replicas compete).

    Both handlers are de-duplicated by event id (``dedupe=True``): a request delivered
    twice (a crash before its ack) is done once. A saga's coordinator never sends a step
    again after a crash (its requests resume from the journal), so each step's action
    runs once per saga. A compensation may be *sent* more than once — it is retried
    after a failure or a timeout — so ``compensate`` must be idempotent: use
    ``request.key`` (``saga_id:step``) as the idempotency key of the system it calls.
    Raises :class:`UsageError` when a function is not callable.
    """

    def __init__(
        self, *, name: str, topic: str, action: ActionFn, compensate: CompensateFn
    ) -> None:
        if not callable(action) or not callable(compensate):
            raise UsageError("a saga participant needs callable action and compensate")
        super().__init__(name=name)
        self.topic = topic
        self._action = action
        self._compensate = compensate
        self.bind(topic, self.on_step, message=StepRequest, dedupe=True)
        self.bind(topic, self.on_compensate, message=Compensate, dedupe=True)

    async def on_step(self, request: StepRequest, ctx: Context) -> StepDone:
        """Do the step; the reply carries its result."""
        try:
            result = self._action(request, ctx)
            if inspect.isawaitable(result):
                result = await result
        except StepRefused as exc:
            ctx.logger.info("refused step %s: %s", request.key, exc)
            return StepDone(saga_id=request.saga_id, step=request.step, refused=str(exc))
        return StepDone(saga_id=request.saga_id, step=request.step, result=dict(result or {}))

    async def on_compensate(self, request: Compensate, ctx: Context) -> Compensated:
        """Undo the step."""
        done = self._compensate(request, ctx)
        if inspect.isawaitable(done):
            await done
        return Compensated(saga_id=request.saga_id, step=request.step)
