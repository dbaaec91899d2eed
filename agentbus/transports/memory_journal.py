"""The memory transport's journal store: SQLite, written in batches.

Records wait in a list and reach SQLite in batches (on a short timer, before any read
and on close): one ``executemany`` per batch instead of several per publish. The
database is opened on first use, so a transport (or a Runtime) that is built but never
used opens nothing and leaves nothing to close.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import JournalEntry, JournalRecord, Question, Reservation, RunInfo, fits
from .run_query import RunFilter, scan_filtered
from .sqlite_journal import SqliteJournal

if TYPE_CHECKING:
    from ..signing import Signer

__all__ = ["MemoryJournalStore"]

_FLUSH_DELAY_S = 0.2


class MemoryJournalStore:
    """Runs and records in SQLite (``path``) or in memory (``None``).

    ``check`` raises when the owning transport is closed.
    """

    #: Signs every journal record written (set by a :class:`~agentbus.Runtime` with a signer).
    signer: Signer | None = None

    def __init__(self, path: str | Path | None, check: Callable[[], None]) -> None:
        self._path = path
        self._check = check
        self._sqlite: SqliteJournal | None = None
        self._pending: list[JournalEntry] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._closed = False
        #: Runs' budget spend: one process owns the memory transport, so a dict
        #: changed without awaiting in between is atomic.
        self._spent: dict[str, dict[str, float]] = {}

    @property
    def _db(self) -> SqliteJournal:
        if self._sqlite is None:
            self._sqlite = SqliteJournal(self._path)
        return self._sqlite

    def append(self, records: Sequence[JournalEntry]) -> None:
        """Queue records for the next batch (a broker call's journal entries)."""
        if not records:
            return
        self._pending.extend(records)
        self._schedule_flush()

    def close(self) -> None:
        """Write what is queued and close the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._drain()
        if self._sqlite is not None:
            self._sqlite.close()

    def _drain(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self._db.append(pending, self.signer)

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(_FLUSH_DELAY_S, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._closed:
            self._drain()
            self._db.flush()

    async def save_run(self, run: RunInfo) -> None:
        self._check()
        self._drain()  # keep records and run updates in the order they were made
        self._db.save_run(run)
        self._schedule_flush()

    async def write_journal(self, records: Sequence[JournalEntry]) -> None:
        self._check()
        self.append(records)

    async def list_runs(self, *, limit: int = 100, where: RunFilter | None = None) -> list[RunInfo]:
        self._check()
        self._drain()
        if where is None or not where.needs_records:
            return self._db.list_runs(limit, where)  # SQL answers every condition

        async def newest(n: int) -> tuple[list[RunInfo], bool]:
            return self._db.newest(n, where)

        return await scan_filtered(newest, where, self.read_journal, limit=limit)

    async def get_run(self, run_id: str) -> RunInfo | None:
        self._check()
        self._drain()
        return self._db.get_run(run_id)

    async def read_journal(self, run_id: str) -> list[JournalRecord]:
        self._check()
        self._drain()
        return self._db.read(run_id)

    async def prune_runs(self, *, before: float) -> list[str]:
        self._check()
        self._drain()
        pruned = self._db.prune(before)
        self._db.flush()
        return pruned

    async def journal_mark(self, run_id: str) -> str | None:
        self._check()
        self._drain()  # queued records count
        return self._db.mark(run_id)

    async def drop_run(self, run_id: str, *, mark: str) -> bool:
        self._check()
        self._drain()
        return self._db.drop(run_id, mark)

    async def reserve(
        self, run_id: str, amounts: Mapping[str, float], limits: Mapping[str, float]
    ) -> Reservation:
        self._check()
        spent = self._spent.setdefault(run_id, {})
        names = [*amounts, *(n for n in limits if n not in amounts)]
        for name, limit in limits.items():
            if not fits(spent.get(name, 0.0), amounts.get(name, 0.0), limit):
                return Reservation(False, {n: spent.get(n, 0.0) for n in names}, name)
        for name, amount in amounts.items():
            spent[name] = spent.get(name, 0.0) + amount
        return Reservation(True, {n: spent.get(n, 0.0) for n in names})

    async def settle(self) -> None:
        """Nothing to wait for: records are readable once written."""

    async def relay_pending(self, *, older_than: float) -> int:
        """Nothing to relay: records are written with what they record, in one step."""
        self._check()
        return 0

    # -- questions: a table of the SQLite file (other processes answer them) ------------
    async def open_question(self, question: Question) -> tuple[Question, bool]:
        self._check()
        return self._db.questions.open(question)

    async def get_question(self, run_id: str, question_id: str) -> Question | None:
        self._check()
        return self._db.questions.get(run_id, question_id)

    async def list_questions(self, *, run_id: str | None = None) -> list[Question]:
        self._check()
        return self._db.questions.list_open(run_id)

    async def answer_question(
        self, run_id: str, question_id: str, answer: Any, *, by: str, now: float
    ) -> tuple[bool, Question | None]:
        self._check()
        return self._db.questions.answer(run_id, question_id, answer, by, now)

    async def withdraw_questions(self, run_id: str, *, by: str, now: float) -> list[Question]:
        self._check()
        return self._db.questions.withdraw(run_id, by, now)

    async def claim_questions(
        self, agents: Sequence[str], *, now: float, grace: float, limit: int = 100
    ) -> list[Question]:
        self._check()
        return self._db.questions.claim(agents, now, grace, limit)

    async def resumed_question(self, question: Question) -> bool:
        self._check()
        return self._db.questions.resumed(question, time.time())

    def delete_all(self) -> int:
        """Delete every run and record; returns how many runs went."""
        self._pending = []
        pruned = self._db.prune(float("inf"))
        self._db.flush()
        self._db.questions.forget_all()
        return len(pruned)
