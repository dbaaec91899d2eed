"""The saga coordinator: steps forward, compensations backward, every move journaled."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentbus import Agent, Context, DecodeError, RemoteError, RequestTimeout, UsageError, handle

from ._messages import Compensate, Compensated, SagaJob, SagaOutcome, StepDone, StepRequest

__all__ = ["Saga", "Step"]

#: What a failed step or compensation request raises.
_FAILURES = (RemoteError, RequestTimeout, DecodeError)


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a saga: a request to ``topic``, undone by a :class:`Compensate` request
    to ``compensation_topic`` (default: the same topic). ``timeout`` overrides the saga's
    ``step_timeout`` for this step."""

    name: str
    topic: str
    compensation_topic: str | None = None
    timeout: float | None = None

    @property
    def undo_topic(self) -> str:
        return self.compensation_topic or self.topic


class Saga(Agent, name="saga"):
    """Runs :class:`SagaJob` requests on ``topic`` through ``steps``, in order.

    Each step is a request (:class:`StepRequest`) answered by :class:`StepDone`. When a
    step fails (its handler raised, or was dead-lettered) or does not answer within its
    timeout, the steps done so far are compensated newest first — the timed-out step
    too, first, since it may have happened: its compensation gets ``result=None``. A
    compensation that fails is retried ``compensation_attempts`` times in all, with
    doubling delays from ``compensation_backoff[0]`` up to ``[1]`` seconds; one that
    keeps failing ends the saga ``compensation_failed`` (journaled, the outcome names it)
    for a person to finish. The reply is a :class:`SagaOutcome`.

    A crash of the coordinator's process mid-saga is survived by the runtime's resume
    (docs/durability.md): the redelivered job re-runs this handler, and every request
    the crashed attempt sent is matched to its journaled send — not sent again, its
    reply taken from the journal or awaited — so no step is done twice and no
    compensation skipped. Raises :class:`UsageError` for a bad setting.
    """

    def __init__(
        self,
        *,
        topic: str,
        steps: Sequence[Step],
        name: str | None = None,
        step_timeout: float = 30.0,
        compensation_attempts: int = 5,
        compensation_backoff: tuple[float, float] = (0.2, 5.0),
    ) -> None:
        if not steps:
            raise UsageError("a saga needs at least one step")
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise UsageError(f"step names must be unique, got {names!r}")
        if step_timeout <= 0 or compensation_attempts < 1:
            raise UsageError("step_timeout must be positive and compensation_attempts >= 1")
        for s in steps:
            handle(s.topic)  # validates the topic names now, at configuration time
            handle(s.undo_topic)
        super().__init__(name=name)
        self.topic = topic
        self.steps = list(steps)
        self.step_timeout = step_timeout
        self.compensation_attempts = compensation_attempts
        self.compensation_backoff = compensation_backoff
        self.bind(topic, self.on_job, message=SagaJob)

    async def on_job(self, job: SagaJob, ctx: Context) -> SagaOutcome:
        """Run the saga ``job`` to its outcome."""
        sid = job.saga_id
        await ctx.note("saga.started", saga_id=sid, steps=[s.name for s in self.steps])
        results: dict[str, dict[str, Any]] = {}
        for step in self.steps:
            await ctx.note("saga.step", saga_id=sid, saga_step=step.name)
            request = StepRequest(
                saga_id=sid, step=step.name, data={"input": job.data, "results": results}
            )
            failure = await self._do(ctx, step, request, sid)
            if isinstance(failure, tuple):
                error, timed_out = failure
                await ctx.note(
                    "saga.step_failed",
                    saga_id=sid,
                    saga_step=step.name,
                    error=error,
                    timed_out=timed_out,
                )
                return await self._compensate(ctx, job, results, step, error, timed_out)
            results[step.name] = failure.result
            await ctx.note(
                "saga.step_done", saga_id=sid, saga_step=step.name, result=failure.result
            )
        await ctx.note("saga.completed", saga_id=sid)
        return SagaOutcome(saga_id=sid, status="completed", results=results)

    async def _do(
        self, ctx: Context, step: Step, request: StepRequest, sid: str
    ) -> StepDone | tuple[str, bool]:
        """The step's reply, or why it failed and whether it timed out."""
        try:
            done = await ctx.request(
                step.topic,
                request,
                timeout=step.timeout or self.step_timeout,
                expect=StepDone,
                key=sid,
            )
        except _FAILURES as exc:
            return f"{type(exc).__name__}: {exc}", isinstance(exc, RequestTimeout)
        if done.refused is not None:
            return f"refused: {done.refused}", False
        return done

    async def _compensate(
        self,
        ctx: Context,
        job: SagaJob,
        results: dict[str, dict[str, Any]],
        failed: Step,
        error: str,
        timed_out: bool,
    ) -> SagaOutcome:
        done = [s for s in self.steps if s.name in results]
        undo: list[tuple[Step, dict[str, Any] | None]] = [(s, results[s.name]) for s in done]
        if timed_out:
            undo.append((failed, None))  # it may have happened: undone first
        outcome = SagaOutcome(
            saga_id=job.saga_id,
            status="compensated",
            results=results,
            failed_step=failed.name,
            error=error,
        )
        for step, result in reversed(undo):
            if not await self._undo(ctx, job.saga_id, step, result):
                await ctx.note("saga.compensation_failed", saga_id=job.saga_id, saga_step=step.name)
                return outcome.model_copy(
                    update={"status": "compensation_failed", "stuck": step.name}
                )
            outcome.compensated.append(step.name)
        await ctx.note("saga.compensated", saga_id=job.saga_id, steps=outcome.compensated)
        return outcome

    async def _undo(
        self, ctx: Context, sid: str, step: Step, result: dict[str, Any] | None
    ) -> bool:
        delay, ceiling = self.compensation_backoff
        for attempt in range(1, self.compensation_attempts + 1):
            await ctx.note("saga.compensating", saga_id=sid, saga_step=step.name, attempt=attempt)
            try:
                await ctx.request(
                    step.undo_topic,
                    Compensate(saga_id=sid, step=step.name, result=result),
                    timeout=step.timeout or self.step_timeout,
                    expect=Compensated,
                    key=sid,
                )
            except _FAILURES as exc:
                await ctx.note(
                    "saga.compensation_error",
                    saga_id=sid,
                    saga_step=step.name,
                    attempt=attempt,
                    error=f"{type(exc).__name__}: {exc}",
                )
                if attempt < self.compensation_attempts:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, ceiling)
                continue
            await ctx.note("saga.step_compensated", saga_id=sid, saga_step=step.name)
            return True
        return False
