"""Runs: one execution of a workflow, recorded in the journal from start to end."""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._bus import Bus
from ._cancel import CANCELLED, RunCancelled
from .budget import BUDGET_EXCEEDED
from .context import Scope, current_scope, reset_scope, set_scope
from .envelope import new_id
from .journal import record
from .message import Message
from .redact import redact, redact_text
from .transports import JournalEntry, Question, RunInfo

if TYPE_CHECKING:
    from ._hooks import Tracer
    from ._writer import Writer

__all__ = ["Run"]

M = TypeVar("M", bound=Message)


class Run:
    """One run. ``async with runtime.run("name") as run`` starts and finishes it.

    Inside the block every event published (by this task, by handlers it triggers,
    in any process) carries this run's id. Leaving the block marks the run
    ``completed``, or ``failed`` with the error when the block raised.

    Built by :meth:`Runtime.run`: ``runtime`` publishes and requests, ``writer``
    records the run, ``tracer`` opens its root span.
    """

    def __init__(
        self,
        runtime: Bus,
        name: str,
        *,
        writer: Writer,
        tracer: Tracer,
        meta: dict[str, Any] | None = None,
        run_id: str | None = None,
        status: str = "running",
    ) -> None:
        self.runtime = runtime
        self._writer = writer
        self._tracer = tracer
        self.name = name
        self.run_id = run_id or new_id()
        self.meta: dict[str, Any] = redact(dict(meta or {}))  # a URL in it, say
        self.info = RunInfo(self.run_id, name, status, time.time(), None, meta=self.meta)
        self.result: Any = None
        self._token: Any = None
        self._span: AbstractContextManager[Any] = nullcontext()
        #: Tasks waiting in :meth:`request` (ended by :meth:`cancel`).
        self._waiting: set[asyncio.Task[Any]] = set()

    async def begin(self) -> None:
        """Record the run's start."""
        await self._writer.save_run(self.info)
        await self._writer.write_now(
            JournalEntry(self.run_id, record("run_started", name=self.name, meta=self.meta))
        )

    async def finish(self, status: str = "completed", error: str | None = None) -> None:
        """Record the run's end with ``status`` (and ``error``).

        A run cancelled meanwhile (here or by another process) stays ``cancelled``: its
        end was recorded by the cancel. A run that hit its budget (any process can find
        that) ends ``budget_exceeded`` whatever its own code did then."""
        if self.info.status == CANCELLED:
            return
        await self._writer.flush()
        stored = await self._writer.stored_run(self.run_id)
        if stored is not None and stored.status == CANCELLED:  # by another process
            self.info.status = CANCELLED
            return
        if stored is not None and stored.status == BUDGET_EXCEEDED:
            status = BUDGET_EXCEEDED
        self.info.status = status
        self.info.ended = time.time()
        # What the run published by its end: anything counted later is work that outlived
        # it (a handler still running when the run failed), shown apart as late events.
        self.meta["events_at_end"] = stored.events if stored is not None else 0
        fields: dict[str, Any] = {"name": self.name, "status": status}
        if error:
            fields["error"] = error
        await self._writer.write_now(JournalEntry(self.run_id, record("run_finished", **fields)))
        await self._writer.save_run(self.info)

    async def cancel(self, *, by: str = "api") -> bool:
        """Cancel this run everywhere: its handlers in every process are cancelled, its
        queued events are not handled, its status becomes ``cancelled``.

        Returns False when the run had already ended. Requests this ``Run`` object is
        waiting on end with :class:`~agentbus.errors.RunCancelled`.
        """
        done = await self.runtime.cancel_run(self.run_id, by=by)
        if done:
            self.info.status = CANCELLED
            for task in list(self._waiting):
                task.cancel(CANCELLED)
        return done

    async def pending(self) -> list[Question]:
        """This run's questions waiting for a person's answer (``ctx.ask_human``)."""
        return await self.runtime.pending(self.run_id)

    async def answer(self, question_id: str, answer: Any, *, by: str = "api") -> Question:
        """Answer one of this run's questions (see :meth:`Runtime.answer`)."""
        return await self.runtime.answer(self.run_id, question_id, answer, by=by)

    async def __aenter__(self) -> Run:
        await self.begin()
        self._span = self._tracer.workflow(self.name, self.run_id)
        self._span.__enter__()  # the run's root span: one run, one trace
        self._token = set_scope(Scope(self.run_id))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        reset_scope(self._token)
        self._span.__exit__(exc_type, exc, exc.__traceback__ if exc else None)
        if exc is None:
            await self.finish("completed")
        else:
            await self.finish("failed", redact_text(f"{type(exc).__name__}: {exc}"))

    async def publish(self, topic: str, message: Message, *, key: str | None = None) -> str:
        """Publish ``message`` to ``topic`` in this run (see :meth:`Runtime.publish`).

        Raises :class:`~agentbus.errors.RunCancelled` once this object cancelled the run."""
        self._refuse_cancelled()
        scope = current_scope()
        if scope is not None and scope.run_id == self.run_id and scope.event is None:
            # Already in this run's own scope (inside `async with run`): nothing to set.
            return await self.runtime.publish(topic, message, key=key)
        token = set_scope(Scope(self.run_id))
        try:
            return await self.runtime.publish(topic, message, key=key)
        finally:
            reset_scope(token)

    @overload
    async def request(
        self,
        topic: str,
        message: Message,
        *,
        timeout: float | None = None,
        expect: type[M],
        key: str | None = None,
    ) -> M: ...

    @overload
    async def request(
        self,
        topic: str,
        message: Message,
        *,
        timeout: float | None = None,
        expect: None = None,
        key: str | None = None,
    ) -> Any: ...

    async def request(
        self,
        topic: str,
        message: Message,
        *,
        timeout: float | None = None,
        expect: type[M] | None = None,
        key: str | None = None,
    ) -> Any:
        """Send a request within this run (see :meth:`Runtime.request`).

        Returns the reply, typed as ``expect`` when given. Raises
        :class:`~agentbus.errors.RunCancelled` when :meth:`cancel` ends the wait."""
        self._refuse_cancelled()
        token = set_scope(Scope(self.run_id))
        task = asyncio.current_task()
        if task is not None:
            self._waiting.add(task)
        try:
            return await self.runtime.request(
                topic, message, timeout=timeout, expect=expect, key=key
            )
        except asyncio.CancelledError as exc:
            if exc.args == (CANCELLED,) and task is not None and self.info.status == CANCELLED:
                task.uncancel()
                raise RunCancelled(f"run {self.run_id} was cancelled") from None
            raise
        finally:
            reset_scope(token)
            if task is not None:
                self._waiting.discard(task)

    def _refuse_cancelled(self) -> None:
        if self.info.status == CANCELLED:
            raise RunCancelled(f"run {self.run_id} was cancelled")

    def __repr__(self) -> str:
        return f"<Run {self.name!r} id={self.run_id} status={self.info.status}>"
