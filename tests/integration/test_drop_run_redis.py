"""The Redis store's journal_mark / drop_run / list_runs(where=) beyond the shared
contract: the run index in other slots, outbox entries not relayed yet, ``?wait=N``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from agentbus.testing.redis_cluster import cli
from agentbus.testing.redis_server import RedisServer
from agentbus.transports import JournalEntry, RunInfo, run_query
from agentbus.transports.redis import RedisStreamsTransport
from agentbus.transports.run_query import RunFilter

pytestmark = [pytest.mark.redis]


@pytest.fixture
async def t(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStreamsTransport]:
    transport = RedisStreamsTransport(redis_url, prefix=redis_prefix)
    await transport.connect()
    try:
        yield transport
    finally:
        await transport.aclose()


def note(run_id: str, n: int = 0) -> JournalEntry:
    return JournalEntry(run_id, {"kind": "note", "time": time.time(), "n": n})


async def test_an_index_entry_whose_run_is_gone_is_skipped_then_removed(
    t: RedisStreamsTransport,
) -> None:
    # What a drop (or prune) interrupted between deleting the run's keys and removing
    # its index entry (another slot, a call of its own) leaves behind.
    for run_id, started in (("gone", 1.0), ("kept", 2.0)):
        await t.store.save_run(RunInfo(run_id, "n", status="completed", started=started))
        await t.store.write_journal([note(run_id)])
    await t._r.delete(t.keys.run("gone"), t.keys.journal("gone"))
    index = t.keys.run_index("gone")
    assert await t._r.zscore(index, "gone") == 1.0

    assert [r.run_id for r in await t.store.list_runs()] == ["kept"]
    assert [r.run_id for r in await t.store.list_runs(where=RunFilter(name="n"))] == ["kept"]
    assert [r.run_id for r in await t.store.list_runs(where=RunFilter(agent="x"))] == []
    assert await t.store.get_run("gone") is None
    assert await t.store.journal_mark("gone") is None

    assert await t.store.drop_run("gone", mark="any") is True  # gone: its entry goes too
    assert await t._r.zscore(index, "gone") is None
    assert [r.run_id for r in await t.store.list_runs()] == ["kept"]


async def test_a_dropped_run_leaves_no_key_behind(t: RedisStreamsTransport) -> None:
    await t.store.save_run(RunInfo("r", "n", status="completed", started=1.0))
    await t.publish("drop.t", b'{"id":"e"}', records=[JournalEntry("r", {"kind": "published"})])
    mark = await t.store.journal_mark("r")
    assert mark is not None

    assert await t.store.drop_run("r", mark=mark) is True

    assert await t._r.exists(t.keys.run("r"), t.keys.journal("r")) == 0
    assert await t._r.zscore(t.keys.run_index("r"), "r") is None
    await t.store.relay.flush()  # the relayed outbox entry's deletion (best effort)
    assert await t._r.xlen(t.keys.outbox("drop.t")) == 0


async def test_an_outbox_entry_counts_once_relayed(t: RedisStreamsTransport) -> None:
    # Another process's write (or one whose writer died before the copy) sits in a
    # topic's outbox until relayed: the run's mark cannot see it before, and does after.
    await t.store.save_run(RunInfo("r", "n", status="completed", started=1.0))
    await t.store.write_journal([note("r", 1)])
    mark = await t.store.journal_mark("r")
    entry = t.store.outbox("late.t", [note("r", 2)])
    assert entry is not None
    await t._r.xadd(entry.key, entry.fields())
    assert await t.store.journal_mark("r") == mark  # not in the run yet

    assert await t.store.relay_pending(older_than=0.0) == 1
    assert await t.store.journal_mark("r") != mark
    assert mark is not None
    assert await t.store.drop_run("r", mark=mark) is False
    assert [r.record["n"] for r in await t.store.read_journal("r")] == [1, 2]


async def test_a_filtered_list_looks_further_back_when_too_few_runs_match(
    t: RedisStreamsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_query, "FIRST_SCAN", 2)  # widen after 2, 16, ... runs
    for n in range(40):
        name = "old" if n < 3 else "new"
        await t.store.save_run(RunInfo(f"r{n:02}", name, status="completed", started=float(n)))
        await t.store.write_journal([JournalEntry(f"r{n:02}", {"kind": "step", "agent": name})])

    by_name = await t.store.list_runs(limit=2, where=RunFilter(name="old"))
    assert [r.run_id for r in by_name] == ["r02", "r01"]
    by_agent = await t.store.list_runs(where=RunFilter(agent="old"))
    assert [r.run_id for r in by_agent] == ["r02", "r01", "r00"]
    # The start bounds go to the index: the scan starts at the newest run before them.
    window = await t.store.list_runs(limit=3, where=RunFilter(since=5.0, until=30.0))
    assert [r.run_id for r in window] == ["r29", "r28", "r27"]
    window = await t.store.list_runs(where=RunFilter(agent="new", since=36.0, until=50.0))
    assert [r.run_id for r in window] == ["r39", "r38", "r37", "r36"]


def _synced(replica: RedisServer) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if "master_link_status:up" in cli(replica.port, "info", "replication"):
            return True
        time.sleep(0.05)
    return False


async def test_drop_run_waits_for_the_replica_with_wait() -> None:
    with (
        RedisServer() as primary,
        RedisServer(config=[f"replicaof 127.0.0.1 {primary.port}"]) as replica,
    ):
        assert _synced(replica)
        t = RedisStreamsTransport(primary.url + "?wait=1&wait_timeout=2000", prefix="w:")
        await t.connect()
        try:
            await t.store.save_run(RunInfo("r", "n", status="completed", started=1.0))
            await t.store.write_journal([note("r")])
            mark = await t.store.journal_mark("r")
            assert mark is not None
            assert await t.store.drop_run("r", mark=mark) is True
            # Acknowledged means deleted on the replica when the call returns.
            assert cli(replica.port, "exists", t.keys.run("r"), t.keys.journal("r")).strip() == "0"
        finally:
            await t.aclose()
