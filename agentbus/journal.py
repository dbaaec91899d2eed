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
``parked``
    a delivery acknowledged while its handler waits for a person's answer
    (``question_id``); the ``delivered`` record of its wake-up says ``woken``.
``question_asked`` / ``question_answered`` / ``question_timed_out`` / ``question_withdrawn``
    a question to a person (``ctx.ask_human``): ``question_id``, ``agent``, ``event_id``;
    the question, the answer and who gave it, the deadline, who withdrew it.
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
from .transports import (
    JournalArchive,
    JournalRecord,
    RunInfo,
    Transport,
    open_archive,
    open_transport,
    resolve_journal_url,
)
from .transports.archive_format import RunSummary
from .transports.run_query import RunFilter
from .transports.tiered import TieredReader

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
        "budget_exceeded",
        "parked",
        "question_asked",
        "question_answered",
        "question_timed_out",
        "question_withdrawn",
    }
)


def record(kind: str, **fields: Any) -> dict[str, Any]:
    """Build a journal record of ``kind`` stamped with the current time."""
    return {"kind": kind, "time": time.time(), **fields}


class Journal:
    """Read recorded runs from a transport, and from its journal archive if it has one.

    ``async with Journal.open(url, journal_url=...) as journal`` opens its own transport
    (and archive); otherwise pass an open transport (``runtime.journal`` does). Every
    read finds a run wherever it is now: hot in the transport's store, or moved to the
    archive by :func:`agentbus.archive.archive_runs` (see :class:`TieredReader`).
    """

    def __init__(self, transport: Transport, archive: JournalArchive | None = None) -> None:
        self.transport = transport
        #: The journal archive (``None``: the transport's store holds every run).
        self.archive = archive
        self.reader = TieredReader(transport.store, archive)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str | None = None, *, journal_url: str | None = None
    ) -> AsyncIterator[Journal]:
        """Connect to the store at ``url`` (default: ``$AGENTBUS_URL`` or ``memory://``)
        and the archive at ``journal_url`` (default: ``$AGENTBUS_JOURNAL_URL``, or none).

        Raises :class:`UsageError` when the archive's schema is behind this version
        (``agentbus db upgrade`` brings it up to date).
        """
        transport = open_transport(url)
        archive_url = resolve_journal_url(journal_url)
        archive = open_archive(archive_url) if archive_url else None
        try:
            await transport.connect()
            if archive is not None:
                await archive.connect()
            yield cls(transport, archive)
        finally:
            if archive is not None:
                await archive.aclose()
            await transport.aclose()

    async def runs(self, *, limit: int = 100, where: RunFilter | None = None) -> list[RunInfo]:
        """Recorded runs, newest first; with ``where``, only those meeting it."""
        return await self.reader.list_runs(limit=limit, where=where)

    async def run(self, run_id: str) -> RunInfo:
        """One run, found by its id or a unique prefix of it.

        Raises :class:`UsageError` when no run (or more than one) matches.
        """
        found = await self.reader.get_run(run_id)
        if found is not None:
            return found
        matches = await self.reader.find_runs(run_id, limit=6)
        if len(matches) == 1:
            only = await self.reader.get_run(matches[0])
            if only is not None:
                return only
        where = (
            self.transport.url
            if self.archive is None
            else (f"{self.transport.url} or {self.archive.url}")
        )
        if not matches:
            raise UsageError(f"no recorded run {run_id!r} in {where}")
        raise UsageError(f"run id prefix {run_id!r} is ambiguous: " + ", ".join(matches[:5]))

    async def records(self, run_id: str) -> list[JournalRecord]:
        """Every record of the run, in the order written."""
        return await self.reader.read_journal(run_id)

    async def summary(self, run_id: str) -> RunSummary:
        """The run's agents, event types and model tokens (per model)."""
        return await self.reader.summary(run_id)

    async def events(self, run_id: str) -> list[Envelope]:
        """The run's published events, in the order published."""
        return [
            Envelope.from_dict(r.record["event"])
            for r in await self.records(run_id)
            if r.kind == "published"
        ]
