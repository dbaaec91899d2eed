"""The archiver (agentbus.archive): which runs move, and that a moved run is whole.

Hot stores: the embedded SQLite store and Redis; the archive: PostgreSQL (each test in a
schema of its own). Two wrappers stand for what is hard to cause on purpose: a record
arriving between the archiver's read and its delete (:class:`LateWrite`), and an
archive that stores something other than what it was sent (:class:`Corrupting`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from agentbus.archive import ArchiveReport, archive_runs, run_archiver
from agentbus.journal import record
from agentbus.transports import (
    JournalEntry,
    JournalRecord,
    JournalStore,
    MemoryTransport,
    RunInfo,
    Transport,
    open_transport,
)
from agentbus.transports.archive_format import ArchiveChunk, RunSummary
from agentbus.transports.postgres_archive import PostgresArchive

HOUR = 3600.0


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[JournalStore]:
    """The embedded store (SQLite in memory) and the Redis one, each in turn."""
    t: Transport
    if request.param == "sqlite":
        t = MemoryTransport(journal_path=None)
    else:
        t = open_transport(f"{request.getfixturevalue('redis_url')}?prefix={prefix}")
    await t.connect()
    try:
        yield t.store
    finally:
        if request.param == "redis":
            await t.admin.delete_prefix()
        await t.aclose()


@pytest.fixture
async def archive(archive_url: str) -> AsyncIterator[PostgresArchive]:
    """The PostgreSQL archive, in a schema of this test's own."""
    a = PostgresArchive(archive_url)
    await a.upgrade()
    await a.connect()
    try:
        yield a
    finally:
        await a.aclose()


async def make_run(
    store: Any,
    run_id: str,
    *,
    n: int = 5,
    status: str = "completed",
    age: float = 2 * HOUR,
    ended: bool = True,
) -> list[JournalRecord]:
    """A run that started ``age`` seconds ago with ``n`` records; its journal as read."""
    t0 = time.time() - age
    info = RunInfo(run_id, "demo", "running", t0, None, meta={"k": run_id})
    await store.save_run(info)
    entries = [JournalEntry(run_id, record("run_started", name="demo", time=t0))]
    entries += [
        JournalEntry(
            run_id,
            record(
                "model_call",
                time=t0 + 1 + i,
                agent=f"agent{i % 3}",
                request={"model": "m1"},
                response={"usage": {"input_tokens": 2, "output_tokens": 3}, "i": i},
            ),
        )
        for i in range(n - 2)
    ]
    if status != "running":
        entries.append(JournalEntry(run_id, record("run_finished", status=status, time=t0 + n)))
    await store.write_journal(entries)
    if status != "running":
        info.status = status
        info.ended = t0 + n if ended else None
        await store.save_run(info)
    await store.settle()
    return await store.read_journal(run_id)


async def test_only_finished_old_runs_move(store: Any, archive: Any) -> None:
    old = await make_run(store, "old")
    await make_run(store, "running", status="running")
    await make_run(store, "recent", age=60)
    await make_run(store, "failed-old", status="failed", age=3 * HOUR)

    report = await archive_runs(store, archive, older_than=HOUR)

    assert report.archived == ["failed-old", "old"]  # oldest first
    assert report.skipped == {}
    assert report.records == 10
    assert report.bytes > 0
    assert report.records_per_second > 0
    assert await store.get_run("old") is None
    assert await store.read_journal("old") == []
    assert await store.get_run("running") is not None
    assert await store.get_run("recent") is not None
    assert await archive.read_journal("old") == old
    assert await archive.get_run("running") is None
    assert await archive.get_run("recent") is None


async def test_archived_run_reads_back_identical(store: Any, archive: Any) -> None:
    records = await make_run(store, "r1", n=2500)  # three chunks
    before = await store.get_run("r1")
    assert before is not None

    report = await archive_runs(store, archive, older_than=HOUR, batch=1)

    assert report.archived == ["r1"]
    assert await archive.read_journal("r1") == records
    after = await archive.get_run("r1")
    assert after == before
    summary = await archive.summary("r1")
    assert summary.agents == ["agent0", "agent1", "agent2"]
    assert summary.input_tokens == 2 * 2498


async def test_second_pass_is_a_no_op(store: Any, archive: Any) -> None:
    for i in range(7):
        await make_run(store, f"run{i}", age=2 * HOUR + i)

    first = await archive_runs(store, archive, older_than=HOUR, batch=3)
    second = await archive_runs(store, archive, older_than=HOUR, batch=3)

    assert sorted(first.archived) == [f"run{i}" for i in range(7)]
    assert second.archived == []
    assert second.skipped == {}
    assert second.records == 0
    assert len(await archive.list_runs(limit=100)) == 7


async def test_limit_takes_the_oldest(store: Any, archive: Any) -> None:
    for i in range(5):
        await make_run(store, f"run{i}", age=2 * HOUR + i * 10)

    report = await archive_runs(store, archive, older_than=HOUR, limit=2)

    assert report.archived == ["run4", "run3"]
    assert len(await store.list_runs(limit=100)) == 3


async def test_now_moves_the_cutoff(store: Any, archive: Any) -> None:
    await make_run(store, "r", age=60)

    assert (await archive_runs(store, archive, older_than=HOUR)).archived == []
    later = await archive_runs(store, archive, older_than=HOUR, now=time.time() + HOUR)
    assert later.archived == ["r"]


async def test_late_events_after_the_end_wait(store: Any, archive: Any) -> None:
    await make_run(store, "r")
    await store.write_journal([JournalEntry("r", record("handled", agent="slow"))])

    report = await archive_runs(store, archive, older_than=HOUR)

    assert report.archived == []
    assert report.skipped == {"r": "recent records"}
    assert await store.get_run("r") is not None


class LateWrite:
    """The hot store, with a record written to ``run_id`` right after the archiver read
    its journal (once): a late event between the archiver's mark and its delete."""

    def __init__(self, store: Any, run_id: str) -> None:
        self._store = store
        self._run_id = run_id
        self.written: JournalEntry | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def read_journal(self, run_id: str) -> list[JournalRecord]:
        records: list[JournalRecord] = await self._store.read_journal(run_id)
        if run_id == self._run_id and self.written is None:
            # Stamped as old as the run, so that only the mark can tell it came late.
            self.written = JournalEntry(
                run_id, record("handled", agent="late", time=records[-1].time)
            )
            await self._store.write_journal([self.written])
            await self._store.settle()
        return records


async def test_a_late_record_keeps_the_run_hot_until_the_next_pass(
    store: Any, archive: Any
) -> None:
    records = await make_run(store, "late")
    await make_run(store, "other")
    late = LateWrite(store, "late")

    first = await archive_runs(late, archive, older_than=HOUR)

    assert first.archived == ["other"]
    assert first.skipped == {"late": "changed while archiving"}
    hot = await store.read_journal("late")
    assert len(hot) == len(records) + 1
    assert hot[-1].record == late.written.record  # type: ignore[union-attr]

    second = await archive_runs(late, archive, older_than=HOUR)

    assert second.archived == ["late"]
    assert await archive.read_journal("late") == hot  # the copy with the late record
    assert await store.get_run("late") is None


class Corrupting:
    """An archive that stores every chunk with one byte changed (and still reports the
    checksum it was given, so only the database's own digest can tell)."""

    def __init__(self, archive: Any) -> None:
        self._archive = archive

    def __getattr__(self, name: str) -> Any:
        return getattr(self._archive, name)

    async def store_run(
        self, run: RunInfo, chunks: Sequence[ArchiveChunk], summary: RunSummary, checksum: str
    ) -> None:
        bad = [ArchiveChunk(c.first, c.n, c.body.replace(b"demo", b"dEmo")) for c in chunks]
        await self._archive.store_run(run, bad, summary, checksum)


async def test_a_digest_mismatch_keeps_the_run_hot(store: Any, archive: Any) -> None:
    records = await make_run(store, "r")

    report = await archive_runs(store, Corrupting(archive), older_than=HOUR)

    assert report.archived == []
    assert report.skipped == {"r": "digest mismatch"}
    assert await store.read_journal("r") == records
    # The next (sound) pass replaces the bad copy and only then frees the hot one.
    again = await archive_runs(store, archive, older_than=HOUR)
    assert again.archived == ["r"]
    assert await archive.read_journal("r") == records


class FailingFor:
    """An archive whose ``store_run`` raises for the runs named (a poison run)."""

    def __init__(self, archive: Any, run_ids: set[str]) -> None:
        self._archive = archive
        self._ids = run_ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self._archive, name)

    async def store_run(
        self, run: RunInfo, chunks: Sequence[ArchiveChunk], summary: RunSummary, checksum: str
    ) -> None:
        if run.run_id in self._ids:
            raise RuntimeError(f"cannot store {run.run_id}")
        await self._archive.store_run(run, chunks, summary, checksum)


async def test_one_failing_run_does_not_hold_up_the_others(store: Any, archive: Any) -> None:
    await make_run(store, "bad", age=3 * HOUR)
    await make_run(store, "good")

    report = await archive_runs(store, FailingFor(archive, {"bad"}), older_than=HOUR)

    assert report.archived == ["good"]
    assert report.skipped["bad"].startswith("error: RuntimeError")
    assert await store.get_run("bad") is not None


async def test_a_batch_failing_whole_stops_the_pass(store: Any, archive: Any) -> None:
    await make_run(store, "a", age=3 * HOUR)
    await make_run(store, "b")

    with pytest.raises(RuntimeError, match="cannot store a"):
        await archive_runs(store, FailingFor(archive, {"a", "b"}), older_than=HOUR, batch=1)
    assert await store.get_run("b") is not None


async def test_background_archiver_reports_and_survives_a_failing_pass(
    store: Any, archive: Any
) -> None:
    await make_run(store, "r")
    reports: list[ArchiveReport] = []
    stop = asyncio.Event()
    broken = FailingFor(archive, {"r"})

    async def on_report(report: ArchiveReport) -> None:
        reports.append(report)
        if report.archived:
            stop.set()

    async def heal() -> None:
        await asyncio.sleep(0.1)
        broken._ids.clear()

    healing = asyncio.create_task(heal())
    await asyncio.wait_for(
        run_archiver(store, broken, older_than=HOUR, every=0.05, stop=stop, on_report=on_report),
        timeout=10,
    )
    await healing
    assert reports[-1].archived == ["r"]
    assert await store.get_run("r") is None


async def test_background_archiver_ends_when_its_store_is_closed(archive: Any) -> None:
    t = MemoryTransport(journal_path=None)
    await t.connect()
    await t.aclose()

    await asyncio.wait_for(run_archiver(t.store, archive, older_than=HOUR, every=0.01), timeout=5)


async def test_a_run_without_records_is_archived(store: Any, archive: Any) -> None:
    t0 = time.time() - 2 * HOUR
    await store.save_run(RunInfo("empty", "demo", "completed", t0, t0 + 1))

    report = await archive_runs(store, archive, older_than=HOUR)

    assert report.archived == ["empty"]
    assert await store.get_run("empty") is None
    assert await archive.read_journal("empty") == []
    assert (await archive.get_run("empty")).status == "completed"
