"""The embedded journal: runs and their records in a local SQLite file.

The memory transport keeps topics in process memory but writes the journal here, so
``agentbus runs`` and ``agentbus trace`` work after the process has exited. Writes are
committed in small batches (on a short timer and on close) rather than per record: a
crash of the embedded process can lose the last fraction of a second of journal,
which is the price of not paying an fsync per event.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import JournalEntry, JournalRecord, RunInfo, tokens_of

__all__ = ["SqliteJournal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    events INTEGER NOT NULL DEFAULT 0,
    records INTEGER NOT NULL DEFAULT 0,
    meta TEXT NOT NULL DEFAULT '{}',
    tokens INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_run ON records (run_id, seq);
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
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        if "tokens" not in columns:  # a journal written by agentbus 0.1.0 before tokens
            self._db.execute("ALTER TABLE runs ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0")
        self._db.commit()
        self._dirty = False

    def append(self, entries: Sequence[JournalEntry]) -> None:
        """Add records (uncommitted until :meth:`flush`)."""
        if not entries:
            return
        self._db.executemany(
            "INSERT INTO records (run_id, body) VALUES (?, ?)",
            [(e.run_id, e.encode().decode()) for e in entries],
        )
        counts: dict[str, list[int]] = {}
        for e in entries:
            c = counts.setdefault(e.run_id, [0, 0])
            c[1] += 1
            if e.record.get("kind") == "published":
                c[0] += 1
        self._db.executemany(
            "UPDATE runs SET events = events + ?, records = records + ? WHERE run_id = ?",
            [(ev, rec, run_id) for run_id, (ev, rec) in counts.items()],
        )
        spent: dict[str, int] = {}
        for e in entries:
            n = tokens_of(e.record)
            if n:
                spent[e.run_id] = spent.get(e.run_id, 0) + n
        self._db.executemany(
            "UPDATE runs SET tokens = tokens + ? WHERE run_id = ?",
            [(n, run_id) for run_id, n in spent.items()],
        )
        # As on Redis, events counted for a run not saved yet are kept: the run shows up
        # in get_run (status "unknown") and keeps its count once save_run records it.
        self._db.executemany(
            "INSERT OR IGNORE INTO runs (run_id, name, status, started, events, records) "
            "VALUES (?, '', ?, 0, ?, ?)",
            [
                (run_id, _UNSAVED, ev, rec)
                for run_id, (ev, rec) in counts.items()
                if ev  # Redis creates the run hash only to count published events
            ],
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

    def list_runs(self, limit: int = 100) -> list[RunInfo]:
        rows = self._db.execute(
            "SELECT run_id, name, status, started, ended, events, "
            "(SELECT COUNT(*) FROM records r WHERE r.run_id = runs.run_id), meta, tokens FROM runs "
            "WHERE status != ? ORDER BY started DESC LIMIT ?",
            (_UNSAVED, limit),
        ).fetchall()
        return [_run(row) for row in rows]

    def get_run(self, run_id: str) -> RunInfo | None:
        row = self._db.execute(
            "SELECT run_id, name, status, started, ended, events, "
            "(SELECT COUNT(*) FROM records r WHERE r.run_id = runs.run_id), meta, tokens FROM runs "
            "WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        return None if row is None else _run(row)

    def read(self, run_id: str) -> list[JournalRecord]:
        rows = self._db.execute(
            "SELECT seq, body FROM records WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
        return [
            JournalRecord(seq=str(seq), run_id=run_id, record=json.loads(body))
            for seq, body in rows
        ]

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
