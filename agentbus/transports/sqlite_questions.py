"""Questions to people in the embedded journal's SQLite file (one table).

Kept in the same file as the journal so that ``agentbus pending`` and ``agentbus answer``
in another process see and answer the questions of a running embedded runtime, whose
wake-up poll reads them back. Every change is its own ``BEGIN IMMEDIATE`` transaction,
committed at once: the write lock is taken before the check, so two processes sharing
the file cannot both answer (or both claim) one question.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .base import Question

__all__ = ["SCHEMA", "SqliteQuestions"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS questions (
    run_id TEXT NOT NULL,
    question_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    data TEXT NOT NULL,
    asked REAL NOT NULL,
    deadline REAL,
    status TEXT NOT NULL DEFAULT 'open',
    answer TEXT,
    closed REAL,
    by TEXT,
    claimed REAL,
    resumed REAL,
    PRIMARY KEY (run_id, question_id)
);
CREATE INDEX IF NOT EXISTS questions_waiting ON questions (agent, resumed);
"""

_COLUMNS = "data, status, answer, closed, by, claimed, resumed"


def _question(row: tuple[Any, ...]) -> Question:
    data, status, answer, closed, by, claimed, resumed = row
    return Question.from_data(
        json.loads(data),
        status=status,
        answer=None if answer is None else json.loads(answer),
        closed=closed,
        by=by,
        claimed=claimed,
        resumed=resumed,
    )


class SqliteQuestions:
    """The question table of one SQLite connection; ``flush`` commits what the journal
    left uncommitted, before a transaction of ours starts."""

    def __init__(self, db: sqlite3.Connection, flush: Callable[[], None]) -> None:
        self._db = db
        self._flush = flush

    @contextmanager
    def _write(self) -> Iterator[None]:
        self._flush()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.commit()
        except BaseException:
            self._db.rollback()
            raise

    def _get(self, run_id: str, question_id: str) -> Question | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM questions WHERE run_id = ? AND question_id = ?",
            (run_id, question_id),
        ).fetchone()
        return None if row is None else _question(row)

    def open(self, q: Question) -> tuple[Question, bool]:
        with self._write():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO questions (run_id, question_id, agent, data, asked, "
                "deadline) VALUES (?, ?, ?, ?, ?, ?)",
                (q.run_id, q.question_id, q.agent, json.dumps(q.data()), q.asked, q.deadline),
            )
            created = cursor.rowcount == 1
            stored = self._get(q.run_id, q.question_id)
        assert stored is not None
        return stored, created

    def get(self, run_id: str, question_id: str) -> Question | None:
        return self._get(run_id, question_id)

    def list_open(self, run_id: str | None) -> list[Question]:
        where, params = "status = 'open'", ()
        if run_id is not None:
            where, params = "status = 'open' AND run_id = ?", (run_id,)  # type: ignore[assignment]
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM questions WHERE {where} ORDER BY asked, question_id", params
        ).fetchall()
        return [_question(row) for row in rows]

    def answer(
        self, run_id: str, question_id: str, answer: Any, by: str, now: float
    ) -> tuple[bool, Question | None]:
        with self._write():
            q = self._get(run_id, question_id)
            if q is None or q.status != "open":
                return False, q
            if q.deadline is not None and q.deadline <= now:
                self._db.execute(
                    "UPDATE questions SET status = 'timed_out', closed = ? "
                    "WHERE run_id = ? AND question_id = ?",
                    (now, run_id, question_id),
                )
                return False, self._get(run_id, question_id)
            self._db.execute(
                "UPDATE questions SET status = 'answered', answer = ?, closed = ?, by = ? "
                "WHERE run_id = ? AND question_id = ?",
                (json.dumps(answer), now, by, run_id, question_id),
            )
            return True, self._get(run_id, question_id)

    def withdraw(self, run_id: str, by: str, now: float) -> list[Question]:
        with self._write():
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM questions WHERE run_id = ? AND status = 'open'",
                (run_id,),
            ).fetchall()
            self._db.execute(
                "UPDATE questions SET status = 'withdrawn', closed = ?, by = ? "
                "WHERE run_id = ? AND status = 'open'",
                (now, by, run_id),
            )
        out = [_question(row) for row in rows]
        for q in out:
            q.status, q.closed, q.by = "withdrawn", now, by
        return out

    def claim(self, agents: Sequence[str], now: float, grace: float, limit: int) -> list[Question]:
        if not agents:
            return []
        marks = ",".join("?" * len(agents))
        due = (
            f"agent IN ({marks}) AND resumed IS NULL AND "
            "(status IN ('answered', 'timed_out') OR (status = 'open' AND deadline <= ?)) "
            "AND (claimed IS NULL OR claimed + ? <= ?)"
        )
        params = (*agents, now, grace, now)
        # Read first: the common answer is "nothing due", which takes no write lock.
        if (
            self._db.execute(f"SELECT 1 FROM questions WHERE {due} LIMIT 1", params).fetchone()
            is None
        ):
            return []
        with self._write():
            keys = self._db.execute(
                f"SELECT run_id, question_id FROM questions WHERE {due} ORDER BY asked LIMIT ?",
                (*params, limit),
            ).fetchall()
            for run_id, question_id in keys:
                self._db.execute(
                    "UPDATE questions SET status = 'timed_out', closed = ? "
                    "WHERE run_id = ? AND question_id = ? AND status = 'open'",
                    (now, run_id, question_id),
                )
                self._db.execute(
                    "UPDATE questions SET claimed = ? WHERE run_id = ? AND question_id = ?",
                    (now, run_id, question_id),
                )
            claimed = [self._get(run_id, question_id) for run_id, question_id in keys]
        return [q for q in claimed if q is not None]

    def resumed(self, q: Question, now: float) -> bool:
        with self._write():
            cursor = self._db.execute(
                "UPDATE questions SET resumed = ? WHERE run_id = ? AND question_id = ? "
                "AND claimed = ? AND resumed IS NULL",
                (now, q.run_id, q.question_id, q.claimed),
            )
            return cursor.rowcount == 1

    def forget(self, run_ids: Sequence[str]) -> None:
        """Delete the questions of ``run_ids`` (their runs were pruned or dropped);
        uncommitted, as the journal's own deletions."""
        for start in range(0, len(run_ids), 500):
            part = list(run_ids[start : start + 500])
            marks = ",".join("?" * len(part))
            self._db.execute(f"DELETE FROM questions WHERE run_id IN ({marks})", part)

    def forget_all(self) -> None:
        """Delete every question, at once."""
        with self._write():
            self._db.execute("DELETE FROM questions")
