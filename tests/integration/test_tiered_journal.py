"""``Journal`` over two tiers (agentbus.transports.tiered): a run is found hot or archived,
by id or prefix; listings merge both; records that reach an archived run late follow its
archived ones. Hot stores: the embedded SQLite and Redis; the archive: PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_archive import HOUR, make_run

from agentbus import Journal, RunFilter
from agentbus.archive import archive_runs
from agentbus.journal import record
from agentbus.transports import JournalEntry, MemoryTransport, Transport, open_transport
from agentbus.transports.postgres_archive import PostgresArchive


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def journal(
    request: pytest.FixtureRequest, prefix: str, archive_url: str
) -> AsyncIterator[Journal]:
    t: Transport
    if request.param == "sqlite":
        t = MemoryTransport(journal_path=None)
    else:
        t = open_transport(f"{request.getfixturevalue('redis_url')}?prefix={prefix}")
    archive = PostgresArchive(archive_url)
    await archive.upgrade()
    await t.connect()
    await archive.connect()
    try:
        yield Journal(t, archive)
    finally:
        if request.param == "redis":
            await t.admin.delete_prefix()
        await archive.aclose()
        await t.aclose()


async def archive(journal: Journal) -> list[str]:
    assert journal.archive is not None
    report = await archive_runs(journal.transport.store, journal.archive, older_than=HOUR)
    return report.archived


async def test_runs_are_found_in_either_tier(journal: Journal) -> None:
    store: Any = journal.transport.store
    old = await make_run(store, "01OLDRUN", age=3 * HOUR)
    await make_run(store, "01HOTRUN", age=60)
    assert await archive(journal) == ["01OLDRUN"]

    assert await journal.reader.where("01OLDRUN") == "archive"
    assert await journal.reader.where("01HOTRUN") == "hot"
    assert await journal.reader.where("01NONE") is None
    assert (await journal.run("01OLD")).run_id == "01OLDRUN"  # a prefix, archived
    assert (await journal.run("01HOT")).run_id == "01HOTRUN"
    with pytest.raises(Exception, match="ambiguous"):
        await journal.run("01")
    with pytest.raises(Exception, match="no recorded run"):
        await journal.run("02")
    assert await journal.records("01OLDRUN") == old
    assert [r.run_id for r in await journal.runs()] == ["01HOTRUN", "01OLDRUN"]
    assert [r.run_id for r in await journal.runs(limit=1)] == ["01HOTRUN"]
    assert [r.run_id for r in await journal.runs(where=RunFilter(agent="agent1"))] == [
        "01HOTRUN",
        "01OLDRUN",
    ]
    summary = await journal.summary("01OLDRUN")
    assert summary.models == {"m1": {"input": 6, "output": 9, "calls": 3}}
    assert (await journal.summary("01HOTRUN")).models == summary.models


async def test_late_records_of_an_archived_run_follow_its_archived_ones(
    journal: Journal,
) -> None:
    store: Any = journal.transport.store
    archived = await make_run(store, "late", age=3 * HOUR)
    assert await archive(journal) == ["late"]
    await store.write_journal([JournalEntry("late", record("step", step="late work"))])
    await store.settle()

    info = await journal.run("late")
    assert info.status == "completed"  # the archived metadata, not the hot stub's
    records = await journal.records("late")
    assert records[: len(archived)] == archived
    assert [r.record["kind"] for r in records[len(archived) :]] == ["step"]
    assert await journal.reader.where("late") == "archive"


async def test_a_run_in_both_tiers_is_read_hot(journal: Journal) -> None:
    """Between the archive's commit and the hot delete a run is in both: hot wins (a late
    record would go there), and it is listed once."""
    store: Any = journal.transport.store
    assert journal.archive is not None
    await make_run(store, "both", age=3 * HOUR)
    from agentbus.transports.archive_format import archive_chunks, digest, summarize

    records = await store.read_journal("both")
    chunks = archive_chunks(records)
    info = await store.get_run("both")
    await journal.archive.store_run(
        info, chunks, summarize(records), digest(c.body for c in chunks)
    )
    await store.write_journal([JournalEntry("both", record("step", step="after"))])
    await store.settle()
    assert await journal.reader.where("both") == "hot"
    assert len(await journal.records("both")) == len(records) + 1
    assert [r.run_id for r in await journal.runs()] == ["both"]
