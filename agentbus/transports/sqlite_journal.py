"""The embedded journal: runs and their records in a local SQLite file.

Records are stored in chunks: one row per run per written batch, whose body is a JSON
array of the batch's records. A row per record cost three B-tree inserts (table and
index) per event, which made SQLite the largest single cost of the embedded runtime;
a chunk row costs that once per batch. A record's ``seq`` is ``"<chunk>-<index>"``,
ordered like a Redis stream id.

The memory transport keeps topics in process memory but writes the journal here, so
``agentbus runs`` and ``agentbus trace`` work after the process has exited. Writes are
committed in small batches (on a short timer and on close) rather than per record: a
crash of the embedded process can lose the last fraction of a second of journal,
which is the price of not paying an fsync per event.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _json
from .base import JournalEntry, JournalRecord, RunInfo
from .chunks import chunk_by_run, encode_chunk
from .sqlite_questions import SCHEMA as _QUESTIONS
from .sqlite_questions import SqliteQuestions

if TYPE_CHECKING:
    from ..signing import Signer
    from .run_query import RunFilter

__all__ = ["SqliteJournal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    events INTEGER NOT NULL DEFAULT 0,
    records INTEGER NOT NULL DEFAULT 0,  -- unused: counts come from chunks (kept for 0.1 files)
    meta TEXT NOT NULL DEFAULT '{}',
    tokens INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS chunks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_run ON chunks (run_id, seq);
"""

#: The status of a run that has journal records but was never saved with save_run.
_UNSAVED = "unknown"


class SqliteJournal:
    """Runs and journal records in SQLite. ``path=None`` keeps them in memory only."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path))
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.executescript(_QUESTIONS)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        if "tokens" not in columns:  # a journal written by agentbus 0.1.0 before tokens
            self._db.execute("ALTER TABLE runs ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0")
        self._migrate_record_rows()
        self._db.commit()
        self._dirty = False
        #: Questions to people (``ctx.ask_human``), in the same file.
        self.questions = SqliteQuestions(self._db, self.flush)

    def _migrate_record_rows(self) -> None:
        """Move a journal written one row per record (agentbus 0.1) into chunks."""
        legacy = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'"
        ).fetchone()
        if legacy is None:
            return
        self._db.execute(
            "INSERT INTO chunks (run_id, n, body) "
            "SELECT run_id, 1, '[' || body || ']' FROM records ORDER BY seq"
        )
        self._db.execute("DROP TABLE records")

    def append(self, entries: Sequence[JournalEntry], signer: Signer | None = None) -> None:
        """Add records (uncommitted until :meth:`flush`): one chunk row per run.

        ``signer`` signs them (see :func:`~agentbus.transports.chunks.encode_chunk`).
        """
        if not entries:
            return
        chunks = chunk_by_run(entries)
        self._db.executemany(
            "INSERT INTO chunks (run_id, n, body) VALUES (?, ?, ?)",
            [
                # UTF-8 bytes as they are: a BLOB, read back by the same JSON parser
                (c.run_id, len(c.entries), encode_chunk(c.entries, signer))
                for c in chunks
            ],
        )
        events = {c.run_id: c.events for c in chunks if c.events}
        spent = {c.run_id: c.tokens for c in chunks if c.tokens}
        # A run's record count is the sum of its chunks' n (see list_runs): not kept here.
        if events:
            self._db.executemany(
                "UPDATE runs SET events = events + ? WHERE run_id = ?",
                [(ev, run_id) for run_id, ev in events.items()],
            )
        if spent:
            self._db.executemany(
                "UPDATE runs SET tokens = tokens + ? WHERE run_id = ?",
                [(n, run_id) for run_id, n in spent.items()],
            )
        # As on Redis, events counted for a run not saved yet are kept: the run shows up
        # in get_run (status "unknown") and keeps its count once save_run records it.
        if events:
            self._db.executemany(
                "INSERT OR IGNORE INTO runs (run_id, name, status, started, events) "
                "VALUES (?, '', ?, 0, ?)",
                # Redis creates the run hash only to count published events
                [(run_id, _UNSAVED, ev) for run_id, ev in events.items()],
            )
        self._dirty = True

    def save_run(self, run: RunInfo) -> None:
        self._db.execute(
            """INSERT INTO runs (run_id, name, status, started, ended, meta)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (run_id) DO UPDATE SET name = excluded.name,
                 status = excluded.status, started = excluded.started,
                 ended = COALESCE(excluded.ended, runs.ended), meta = excluded.meta""",
            (run.run_id, run.name, run.status, run.started, run.ended, json.dumps(run.meta)),
        )
        self._dirty = True

    def flush(self) -> None:
        """Commit pending writes."""
        if self._dirty:
            self._db.commit()
            self._dirty = False

    def list_runs(self, limit: int = 100, where: RunFilter | None = None) -> list[RunInfo]:
        """The ``limit`` runs started last, newest first, meeting ``where``'s conditions
        on metadata (name, status, start time: its conditions on records are the
        caller's, see :func:`~agentbus.transports.run_query.scan_filtered`)."""
        runs, _ = self.newest(limit, where)
        return runs

    def newest(self, limit: int, where: RunFilter | None = None) -> tuple[list[RunInfo], bool]:
        """:meth:`list_runs`, and whether more runs meet the conditions."""
        conditions: list[str] = ["status != ?"]
        params: list[object] = [_UNSAVED]
        if where is not None:
            for column, op, value in (
                ("name", "=", where.name),
                ("status", "=", where.status),
                ("started", ">=", where.since),
                ("started", "<", where.until),
            ):
                if value is not None:
                    conditions.append(f"{column} {op} ?")
                    params.append(value)
        rows = self._db.execute(
            "SELECT run_id, name, status, started, ended, events, "
            "(SELECT COALESCE(SUM(c.n), 0) FROM chunks c WHERE c.run_id = runs.run_id), meta, tokens FROM runs "
            f"WHERE {' AND '.join(conditions)} ORDER BY started DESC LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
        return [_run(row) for row in rows[:limit]], len(rows) > limit

    def get_run(self, run_id: str) -> RunInfo | None:
        row = self._db.execute(
            "SELECT run_id, name, status, started, ended, events, "
            "(SELECT COALESCE(SUM(c.n), 0) FROM chunks c WHERE c.run_id = runs.run_id), meta, tokens FROM runs "
            "WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        return None if row is None else _run(row)

    def read(self, run_id: str) -> list[JournalRecord]:
        rows = self._db.execute(
            "SELECT seq, body FROM chunks WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
        return [
            JournalRecord(seq=f"{seq}-{i}", run_id=run_id, record=record)
            for seq, body in rows
            for i, record in enumerate(_json.loads(body))
        ]

    def prune(self, before: float) -> list[str]:
        """Delete the runs with nothing recorded since ``before`` (uncommitted until flush).

        A run's last activity is the latest of its start, its end and the time of its
        last record; journals of runs never saved (e.g. ``orphans``) count by their
        records alone. Returns the pruned run ids.
        """
        candidates = self._db.execute(
            "SELECT run_id, MAX(started, COALESCE(ended, 0)) FROM runs WHERE started < ? "
            "UNION ALL SELECT DISTINCT run_id, 0 FROM chunks "
            "WHERE run_id NOT IN (SELECT run_id FROM runs)",
            (before,),
        ).fetchall()
        doomed = []
        for run_id, last in candidates:
            if last >= before:
                continue
            newest = self._db.execute(
                "SELECT body FROM chunks WHERE run_id = ? ORDER BY seq DESC LIMIT 1", (run_id,)
            ).fetchone()
            if newest is not None:
                times = [float(r.get("time", 0.0)) for r in _json.loads(newest[0])]
                if max(times, default=0.0) >= before:
                    continue
            doomed.append(run_id)
        for start in range(0, len(doomed), 500):  # SQLite caps the parameters per statement
            part = doomed[start : start + 500]
            marks = ",".join("?" * len(part))
            self._db.execute(f"DELETE FROM chunks WHERE run_id IN ({marks})", part)
            self._db.execute(f"DELETE FROM runs WHERE run_id IN ({marks})", part)
        self.questions.forget(doomed)
        if doomed:
            self._dirty = True
        return doomed

    def mark(self, run_id: str) -> str | None:
        """A token that changes with every write to the run: its chunk count and newest
        chunk (``seq`` only grows: AUTOINCREMENT never reuses one) and a digest of its
        row (metadata and counters); ``None`` when neither exists."""
        count, newest = self._db.execute(
            "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM chunks WHERE run_id = ?", (run_id,)
        ).fetchone()
        row = self._db.execute(
            "SELECT name, status, started, ended, events, records, meta, tokens FROM runs "
            "WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None and count == 0:
            return None
        digest = hashlib.sha1(json.dumps(row).encode()).hexdigest()
        return f"{count}/{newest}/{digest}"

    def drop(self, run_id: str, mark: str) -> bool:
        """Delete the run's row and chunks if its :meth:`mark` is still ``mark``, in one
        write transaction (committed at once); ``True`` when deleted or already gone."""
        self.flush()
        # IMMEDIATE: the write lock before the check, so that another process sharing
        # the file cannot write between the check and the deletion.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            current = self.mark(run_id)
            if current is not None and current != mark:
                self._db.rollback()
                return False
            self._db.execute("DELETE FROM chunks WHERE run_id = ?", (run_id,))
            self._db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            self.questions.forget([run_id])
            self._db.commit()
        except BaseException:
            self._db.rollback()
            raise
        return True

    def close(self) -> None:
        self.flush()
        self._db.close()


def _run(row: tuple[Any, ...]) -> RunInfo:
    run_id, name, status, started, ended, events, records, meta, tokens = row
    return RunInfo(
        run_id=run_id,
        name=name,
        status=status,
        started=started,
        ended=ended,
        events=events,
        records=records,
        meta=json.loads(meta),
        tokens=tokens,
    )
