"""Runs: one execution of a workflow, recorded in the journal from start to end."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

from .context import Scope, current_scope, reset_scope, set_scope
from .envelope import new_id
from .journal import record
from .message import Message
from .redact import redact, redact_text
from .transports import JournalEntry, RunInfo

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["Run"]

M = TypeVar("M", bound=Message)


class Run:
    """One run. ``async with runtime.run("name") as run`` starts and finishes it.

    Inside the block every event published (by this task, by handlers it triggers,
    in any process) carries this run's id. Leaving the block marks the run
    ``completed``, or ``failed`` with the error when the block raised.
    """

    def __init__(
        self,
        runtime: Runtime,
        name: str,
        *,
        meta: dict[str, Any] | None = None,
        run_id: str | None = None,
        status: str = "running",
    ) -> None:
        self.runtime = runtime
        self.name = name
        self.run_id = run_id or new_id()
        self.meta: dict[str, Any] = redact(dict(meta or {}))  # a URL in it, say
        self.info = RunInfo(self.run_id, name, status, time.time(), None, meta=self.meta)
        self.result: Any = None
        self._token: Any = None
        self._span: AbstractContextManager[Any] = nullcontext()

    async def begin(self) -> None:
        """Record the run's start."""
        await self.runtime.save_run(self.info)
        if self.runtime.journal_enabled:
            await self.runtime.transport.store.write_journal(
                [JournalEntry(self.run_id, record("run_started", name=self.name, meta=self.meta))]
            )

    async def finish(self, status: str = "completed", error: str | None = None) -> None:
        """Record the run's end with ``status`` (and ``error``)."""
        self.info.status = status
        self.info.ended = time.time()
        await self.runtime.writer.flush()
        # What the run published by its end: anything counted later is work that outlived
        # it (a handler still running when the run failed), shown apart as late events.
        stored = await self.runtime.transport.store.get_run(self.run_id)
        self.meta["events_at_end"] = stored.events if stored is not None else 0
        if self.runtime.journal_enabled:
            fields: dict[str, Any] = {"name": self.name, "status": status}
            if error:
                fields["error"] = error
            await self.runtime.transport.store.write_journal(
                [JournalEntry(self.run_id, record("run_finished", **fields))]
            )
        await self.runtime.save_run(self.info)

    async def __aenter__(self) -> Run:
        await self.begin()
        self._span = self.runtime.tracer.workflow(self.name, self.run_id)
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

    async def publish(self, message: Message, topic: str, *, key: str | None = None) -> str:
        """Publish into this run (see :meth:`Runtime.publish`)."""
        scope = current_scope()
        if scope is not None and scope.run_id == self.run_id and scope.event is None:
            # Already in this run's own scope (inside `async with run`): nothing to set.
            return await self.runtime.publish(message, topic, key=key)
        token = set_scope(Scope(self.run_id))
        try:
            return await self.runtime.publish(message, topic, key=key)
        finally:
            reset_scope(token)

    async def request(
        self,
        topic: str,
        message: Message,
        *,
        timeout: float | None = None,
        expect: type[M] | None = None,
        key: str | None = None,
    ) -> Any:
        """Send a request within this run (see :meth:`Runtime.request`)."""
        token = set_scope(Scope(self.run_id))
        try:
            return await self.runtime.request(
                topic, message, timeout=timeout, expect=expect, key=key
            )
        finally:
            reset_scope(token)

    def __repr__(self) -> str:
        return f"<Run {self.name!r} id={self.run_id} status={self.info.status}>"
