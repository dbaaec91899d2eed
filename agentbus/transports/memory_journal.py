"""The memory transport's journal store: SQLite, written in batches.

Records wait in a list and reach SQLite in batches (on a short timer, before any read
and on close): one ``executemany`` per batch instead of several per publish. The
database is opened on first use, so a transport (or a Runtime) that is built but never
used opens nothing and leaves nothing to close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .base import JournalEntry, JournalRecord, RunInfo
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

    async def list_runs(self, *, limit: int = 100) -> list[RunInfo]:
        self._check()
        self._drain()
        return self._db.list_runs(limit)

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

    def delete_all(self) -> int:
        """Delete every run and record; returns how many runs went."""
        self._pending = []
        pruned = self._db.prune(float("inf"))
        self._db.flush()
        return len(pruned)
