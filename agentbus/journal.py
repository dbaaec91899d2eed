"""The journal: every run's event log, and the API to read it back.

Record kinds (each record is a JSON object with ``kind`` and ``time``):

``run_started`` / ``run_finished``
    a run's start and end (with ``status`` and any ``error``).
``published``
    an event left an agent; ``event`` holds the whole CloudEvent.
``delivered`` / ``handled`` / ``failed`` / ``retried`` / ``dead_lettered`` / ``ignored`` /
``duplicate`` / ``replied``
    one delivery's lifecycle: ``event_id``, ``topic``, ``agent``, ``consumer``,
    ``attempt``, and ``duration_ms``, ``error`` or ``reason`` where they apply.
``model_call`` / ``tool_call``
    an external call made while handling an event (``request``, ``response`` or
    ``error``, ``duration_ms``); replay substitutes the recorded responses.
``step``
    a coordinator's own progress note (``pattern``, ``step`` and details).
``dlq_retried``
    an operator re-published a dead-lettered event: ``by`` (user@host), ``dead_letter_id``,
    ``topic``, ``event_id``, ``origin_id``, ``reason``, ``agent``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .envelope import Envelope
from .errors import UsageError
from .transports import JournalRecord, RunInfo, Transport, open_transport

__all__ = ["RECORD_KINDS", "Journal", "record"]

RECORD_KINDS = frozenset(
    {
        "run_started",
        "run_finished",
        "published",
        "delivered",
        "handled",
        "failed",
        "retried",
        "dead_lettered",
        "ignored",
        "duplicate",
        "replied",
        "model_call",
        "tool_call",
        "step",
        "dlq_retried",
    }
)


def record(kind: str, **fields: Any) -> dict[str, Any]:
    """Build a journal record of ``kind`` stamped with the current time."""
    return {"kind": kind, "time": time.time(), **fields}


class Journal:
    """Read recorded runs from a transport.

    ``async with Journal.open(url) as journal`` opens its own transport; otherwise pass
    an open transport (``runtime.journal`` does).
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str | None = None) -> AsyncIterator[Journal]:
        """Connect to the store at ``url`` (default: ``$AGENTBUS_URL`` or ``memory://``)."""
        transport = open_transport(url)
        try:
            await transport.connect()
            yield cls(transport)
        finally:
            await transport.aclose()

    async def runs(self, *, limit: int = 100) -> list[RunInfo]:
        """Recorded runs, newest first."""
        return await self.transport.store.list_runs(limit=limit)

    async def run(self, run_id: str) -> RunInfo:
        """One run, found by its id or a unique prefix of it.

        Raises :class:`UsageError` when no run (or more than one) matches.
        """
        found = await self.transport.store.get_run(run_id)
        if found is not None:
            return found
        matches = [r for r in await self.runs(limit=10_000) if r.run_id.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UsageError(f"no recorded run {run_id!r} in {self.transport.url}")
        raise UsageError(
            f"run id prefix {run_id!r} is ambiguous: " + ", ".join(m.run_id for m in matches[:5])
        )

    async def records(self, run_id: str) -> list[JournalRecord]:
        """Every record of the run, in the order written."""
        return await self.transport.store.read_journal(run_id)

    async def events(self, run_id: str) -> list[Envelope]:
        """The run's published events, in the order published."""
        return [
            Envelope.from_dict(r.record["event"])
            for r in await self.records(run_id)
            if r.kind == "published"
        ]
