"""SIGKILL the archiver mid-batch: nothing lost, nothing doubled, nothing half anywhere.

60 finished runs of 200 to 1,380 records each are written to Redis; the archiver
(``archive_app.py``, a process of its own) moves them to PostgreSQL in small batches
and is killed three times at different points: right after its first commit, held still
between a commit and its verification, and after a dozen deletes. After each kill every
run is whole in Redis, or whole and verified in PostgreSQL, or both; never half in
either, never in neither. A last run to completion leaves every run in PostgreSQL
exactly once, identical to what was written, and none in Redis.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentbus import _json
from agentbus.journal import record
from agentbus.transports import JournalEntry, JournalRecord, RunInfo, Transport, open_transport
from agentbus.transports.archive_format import CHUNK_RECORDS, archive_chunks, digest
from agentbus.transports.postgres_archive import PostgresArchive

pytestmark = [pytest.mark.redis, pytest.mark.slow]

APP = Path(__file__).with_name("archive_app.py")
REPO = Path(__file__).resolve().parents[2]
RUNS = 60


def size(n: int) -> int:
    """Records of run ``n``: 200 to 1380, so some runs take two chunks."""
    return 200 + 20 * n


HOUR = 3600.0


async def populate(store: Any) -> None:
    """RUNS finished runs, two hours old, of ``size(n)`` records (a third of them published
    events carrying their envelope), written in several journal writes each."""
    t0 = time.time() - 2 * HOUR
    for n in range(RUNS):
        run_id = f"crash-{n:03d}"
        started = t0 + n
        info = RunInfo(run_id, "crash", "running", started, None, meta={"n": n})
        await store.save_run(info)
        entries = [JournalEntry(run_id, record("run_started", name="crash", time=started))]
        for i in range(size(n) - 2):
            when = started + i / 1000
            if i % 3 == 0:
                event = {"id": f"{run_id}-e{i}", "type": f"crash.T{i % 4}", "data": {"i": i}}
                entries.append(
                    JournalEntry(
                        run_id,
                        record("published", time=when, agent=f"a{i % 5}", type=event["type"]),
                        raw_event=_json.dumps(event),
                    )
                )
            else:
                entries.append(
                    JournalEntry(
                        run_id,
                        record("handled", time=when, agent=f"a{i % 5}", text="x" * (i % 200)),
                    )
                )
        entries.append(JournalEntry(run_id, record("run_finished", time=started + 1)))
        for start in range(0, len(entries), 100):
            await store.write_journal(entries[start : start + 100])
        info.status, info.ended = "completed", started + 1
        await store.save_run(info)
    await store.settle()


class Archiver:
    """archive_app.py in a subprocess, read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, redis_url: str, archive_url: str, *args: str) -> Archiver:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(APP), redis_url, archive_url, *args,
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        return cls(proc)

    async def until(self, prefix: str, count: int = 1, *, timeout: float = 60) -> None:
        """Read lines until ``count`` of them start with ``prefix``."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while sum(line.startswith(prefix) for line in self.lines) < count:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(
                        f"the archiver ended before {count} {prefix!r} lines: {self.lines}"
                    )
                self.lines.append(raw.decode().rstrip("\n"))

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL

    async def finish(self) -> dict[str, Any]:
        await self.until("report ", timeout=120)
        assert await self.proc.wait() == 0
        line = next(line for line in self.lines if line.startswith("report "))
        return dict(json.loads(line.removeprefix("report ")))


@pytest.fixture
async def hot(redis_url: str, redis_prefix: str) -> AsyncIterator[Transport]:
    t = open_transport(f"{redis_url}?prefix={redis_prefix}")
    await t.connect()
    try:
        yield t
    finally:
        await t.aclose()


@pytest.fixture
async def archive(archive_url: str) -> AsyncIterator[PostgresArchive]:
    a = PostgresArchive(archive_url)
    await a.upgrade()
    await a.connect()
    try:
        yield a
    finally:
        await a.aclose()


async def places(
    store: Any,
    archive: PostgresArchive,
    written: dict[str, list[JournalRecord]],
    infos: dict[str, RunInfo],
) -> dict[str, set[str]]:
    """Where each run is, asserting it is whole wherever it is: ``hot``, ``archived``
    (verified) and ``both``."""
    where: dict[str, set[str]] = {"hot": set(), "archived": set(), "both": set()}
    for run_id, records in written.items():
        hot_info = await store.get_run(run_id)
        hot_records = await store.read_journal(run_id)
        in_hot = hot_info is not None
        if in_hot:
            assert hot_info == infos[run_id], run_id
            assert hot_records == records, f"{run_id} half in Redis"
        else:
            assert hot_records == [], f"{run_id}: records left in Redis without its run"
        stored = await archive.stored_digest(run_id)
        arch_info = await archive.get_run(run_id)
        in_archive = stored is not None
        if in_archive:
            assert stored == (len(records), digest(c.body for c in archive_chunks(records)))
            assert await archive.read_journal(run_id) == records, f"{run_id} half in PG"
            assert arch_info == infos[run_id], run_id
        else:
            assert arch_info is None, f"{run_id}: a run row without its records"
        assert in_hot or in_archive, f"{run_id} lost"
        where["both" if in_hot and in_archive else "hot" if in_hot else "archived"].add(run_id)
    return where


async def test_killed_mid_batch_then_rerun_every_run_exactly_once(
    hot: Transport, archive: PostgresArchive, archive_url: str, redis_url: str, redis_prefix: str
) -> None:
    store = hot.store
    await populate(store)
    ids = [f"crash-{n:03d}" for n in range(RUNS)]
    written = {run_id: await store.read_journal(run_id) for run_id in ids}
    infos = {run_id: await store.get_run(run_id) for run_id in ids}
    assert [len(written[i]) for i in ids] == [size(n) for n in range(RUNS)]
    url = f"{redis_url}?prefix={redis_prefix}"

    # 1. Killed right after its first commit, with the rest of the batch in flight.
    first = await Archiver.start(url, archive_url, "--batch", "4")
    await first.until("stored ")
    await first.kill()
    where = await places(store, archive, written, infos)
    assert where["hot"], "killed too late: nothing left to archive"

    # 2. Held still between its third commit and that run's verification and delete.
    second = await Archiver.start(url, archive_url, "--batch", "3", "--pause-after-store", "3")
    await second.until("paused ")
    paused = next(line for line in second.lines if line.startswith("paused ")).split()[1]
    await second.kill()
    where = await places(store, archive, written, infos)
    assert paused in where["both"]  # committed, not deleted: whole in both
    assert where["hot"] or where["both"]

    # 3. Killed after a dozen deletes, mid-batch.
    third = await Archiver.start(url, archive_url, "--batch", "5")
    await third.until("dropped ", 12)
    await third.kill()
    where = await places(store, archive, written, infos)
    left = where["hot"] | where["both"]
    assert left, "killed too late: nothing left to archive"

    # 4. Run to completion: whatever is left moves; the runs in both are stored again
    # (identical) and deleted from Redis.
    last = await Archiver.start(url, archive_url, "--batch", "4")
    report = await last.finish()
    assert sorted(report["archived"]) == sorted(left)
    assert report["skipped"] == {}
    assert report["records"] == sum(len(written[i]) for i in left)

    where = await places(store, archive, written, infos)
    assert where == {"hot": set(), "archived": set(ids), "both": set()}
    assert await store.list_runs(limit=1000) == []
    assert sorted(r.run_id for r in await archive.list_runs(limit=1000)) == ids
    await assert_stored_once(archive_url, ids)


async def assert_stored_once(archive_url: str, ids: list[str]) -> None:
    """One run row per run and its chunk rows covering its records once, read with SQL
    (the tables of agentbus.transports.postgres_schema)."""
    import asyncpg

    base, _, query = archive_url.partition("?")
    schema = dict(p.split("=", 1) for p in query.split("&"))["schema"]
    conn = await asyncpg.connect(base)
    try:
        runs = await conn.fetch(
            f'SELECT run_id, count(*) AS n FROM "{schema}".runs GROUP BY run_id ORDER BY run_id'
        )
        chunks = await conn.fetch(
            f"SELECT run_id, count(*) AS rows, sum(n) AS records, min(first) AS first "
            f'FROM "{schema}".chunks GROUP BY run_id ORDER BY run_id'
        )
    finally:
        await conn.close()
    assert [(r["run_id"], r["n"]) for r in runs] == [(i, 1) for i in ids]
    assert [(c["run_id"], c["rows"], c["records"], c["first"]) for c in chunks] == [
        (f"crash-{n:03d}", -(-size(n) // CHUNK_RECORDS), size(n), 0) for n in range(RUNS)
    ]
