"""The journal guarantee through topic outboxes (redis_outbox): relay, repair, slots."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from agentbus import Retention, Runtime
from agentbus.testing import wait_for
from agentbus.transports import Ack, JournalEntry
from agentbus.transports.redis import RedisStreamsTransport

pytestmark = [pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import asyncio, sys
from agentbus import Message, Runtime

class Tick(Message, type="crash.Tick"):
    n: int

async def main() -> None:
    rt = Runtime(sys.argv[1], prefix=sys.argv[2])
    async with rt:
        async with rt.run("crash", run_id=sys.argv[3]) as run:
            # One group commit: all ten publishes wait for the same batch.
            await asyncio.gather(*(run.publish("crash.t", Tick(n=n)) for n in range(10)))
    print("not killed")

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    from agentbus.testing.redis_cluster import LocalCluster

    with LocalCluster(masters=3, replicas=0) as cluster:
        yield cluster.url


@pytest.mark.parametrize("where", ["redis", "cluster"])
async def test_a_writer_killed_between_outbox_and_journal_is_repaired_at_start(
    where: str, request: pytest.FixtureRequest, redis_prefix: str, tmp_path: Path
) -> None:
    redis_url = request.getfixturevalue("redis_url" if where == "redis" else "cluster_url")
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    env = {**os.environ, "AGENTBUS_FAULT": "after-outbox", "PYTHONPATH": str(ROOT)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), redis_url, redis_prefix, "crashed-run", env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == -9, (out, err)  # SIGKILLed by the fault hook

    t = RedisStreamsTransport(redis_url, prefix=redis_prefix)
    await t.connect()
    try:
        entries = await t._r.xrange(t.keys.topic("crash.t"))
        assert entries, "the events were written before the kill"
        event_ids = sorted(json.loads(f[b"e"])["id"] for _, f in entries)
        outbox = await t._r.xlen(t.keys.outbox("crash.t"))
        assert outbox >= 1
        before = [r for r in await t.store.read_journal("crashed-run") if r.kind == "published"]
        assert before == []  # killed before the copy

        # A fresh runtime's start relays what the dead writer left once it is older than
        # the grace (shortened here; maintenance passes off: the start alone repairs).
        await asyncio.sleep(0.2)
        rt = Runtime(transport=t, retention=Retention(outbox_grace=0.1, interval=None))
        async with rt:

            async def journaled() -> bool:  # copied, and the outbox entries deleted
                recs = await t.store.read_journal("crashed-run")
                copied = len([r for r in recs if r.kind == "published"]) == len(event_ids)
                return copied and await t._r.xlen(t.keys.outbox("crash.t")) == 0

            await wait_for(journaled, timeout=20)
        published = [r for r in await t.store.read_journal("crashed-run") if r.kind == "published"]
        assert sorted(r.record["event_id"] for r in published) == event_ids  # each exactly once
        assert await t._r.xlen(t.keys.outbox("crash.t")) == 0
        run = await t.store.get_run("crashed-run")
        assert run is not None
        assert run.events == len(event_ids)
    finally:
        await t.admin.delete_prefix()
        await t.aclose()


async def test_a_chunk_copied_twice_is_read_once(redis_url: str, redis_prefix: str) -> None:
    t = RedisStreamsTransport(redis_url, prefix=redis_prefix)
    await t.connect()
    try:
        await t.publish("dup.t", b'{"id":"e1"}', records=[JournalEntry("r", {"kind": "published"})])
        # The state a crash after the journal copy and before the XDEL leaves: the entry
        # is still in the outbox. Put one there by hand and let the repair copy it twice.
        entry = t.store.outbox("dup.t", [JournalEntry("r", {"kind": "note", "n": 1})])
        assert entry is not None
        entry.id = (await t._r.xadd(entry.key, entry.fields())).decode()
        await t.store.relay.relay([entry])  # copied once (its XDEL pending)
        t.store.relay.take_unlinks()  # ... and "crashed" before deleting it
        await asyncio.sleep(0.02)
        assert await t.store.relay_pending(older_than=0.01) == 1  # copied again, deleted
        kinds = Counter(r.kind for r in await t.store.read_journal("r"))
        assert kinds == {"published": 1, "note": 1}
        assert await t._r.xlen(entry.key) == 0
        assert await t.store.relay_pending(older_than=0.0) == 0
    finally:
        await t.admin.delete_prefix()
        await t.aclose()


async def test_records_and_counters_reach_the_run_after_every_kind_of_write(
    redis_url: str, redis_prefix: str
) -> None:
    t = RedisStreamsTransport(redis_url, prefix=redis_prefix)
    await t.connect()
    try:
        rec = JournalEntry
        await t.create_group("w.a", "g")
        await t.create_group("w.b", "g")
        ids = await t.publish_many(
            [("w.a", b"1"), ("w.b", b"2")], records=[rec("r", {"kind": "published"})] * 2
        )
        await t.ack(
            [Ack("w.a", "g", ids[0]), Ack("w.b", "g", ids[1])],
            records=[rec("r", {"kind": "handled"})],
            mark=[(t.keys.dedup("w.a", "agent", "e1"), 60)],
        )
        assert await t.is_marked(t.keys.dedup("w.a", "agent", "e1"))
        more = await t.publish("w.a", b"3")
        fresh = await t.commit(
            Ack("w.a", "g", more),
            (t.keys.dedup("w.a", "agent", "e3"), 60),
            publish=[("w.b", b"out")],
            records=[rec("r", {"kind": "published"}), rec("r", {"kind": "handled"})],
        )
        assert fresh
        last = await t.publish("w.b", b"4")
        await t.dead_letter(
            "w.b", "g", last, {"origin_id": last}, records=[rec("r2", {"kind": "dead_lettered"})]
        )
        kinds = Counter(r.kind for r in await t.store.read_journal("r"))
        assert kinds == {"published": 3, "handled": 2}
        assert [r.kind for r in await t.store.read_journal("r2")] == ["dead_lettered"]
        run = await t.store.get_run("r")
        assert run is not None
        assert (run.events, run.records) == (3, 5)
        outputs = await t._r.xrange(t.keys.topic("w.b"))
        assert [f[b"e"] for _, f in outputs] == [b"2", b"out", b"4"]
        # The relayed entries' deletion is sent a moment later (after the relay round,
        # on its own task): wait for it rather than for a fixed time (a loaded machine).
        left = {"w.a": -1, "w.b": -1}
        deadline = asyncio.get_running_loop().time() + 10.0
        while any(left.values()) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
            left = {topic: await t._r.xlen(t.keys.outbox(topic)) for topic in left}
        assert left == {"w.a": 0, "w.b": 0}
    finally:
        await t.admin.delete_prefix()
        await t.aclose()


@pytest.mark.parametrize("example", ["support_desk", "incident_war_room", "task_auction"])
def test_every_atomic_call_of_an_example_run_touches_one_hash_slot(
    example: str, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    # What Redis Cluster requires, checked on a single Redis: slot_probe records the keys
    # of every script call, MULTI block (with its WATCHed keys) and multi-stream read.
    out = tmp_path / "units.jsonl"
    url = f"{redis_url}{'&' if '?' in redis_url else '?'}prefix={prefix}"
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "slot_probe.py"), str(out),
         "run", str(ROOT / "examples" / f"{example}.py"), "--url", url],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert done.returncode == 0, done.stderr
        units = [json.loads(line) for line in out.read_text().splitlines()]
        assert any(u["cmd"] == "EVALSHA" for u in units)  # the probe saw the scripts
        crossing = [u for u in units if len(u["slots"]) > 1]
        assert crossing == []
    finally:
        asyncio.run(_delete(redis_url, prefix))


async def _delete(url: str, prefix: str) -> None:
    r = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in r.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await r.unlink(*keys)
    finally:
        await r.aclose()


async def test_deletions_queued_during_a_flush_are_sent_without_another_write(
    redis_url: str, redis_prefix: str
) -> None:
    """A relay round that finishes while the previous round's deletions are in flight
    found the flush running and did not schedule its own: its entries stayed in the
    outbox until some later write (CI saw one left behind)."""
    t = RedisStreamsTransport(redis_url, prefix=redis_prefix)
    await t.connect()
    relay = t.store.relay
    key = t.keys.outbox("w.race")
    try:
        first = await t._r.xadd(key, {"x": "1"})
        second = await t._r.xadd(key, {"x": "2"})
        relay._unlinks = {key: [first.decode()]}
        relay.schedule_flush()
        flushing = relay._flushing
        assert flushing is not None
        await asyncio.sleep(0)  # the flush has taken the first deletion and is sending it
        await asyncio.sleep(0)
        relay._unlinks.setdefault(key, []).append(second.decode())
        relay.schedule_flush()  # a no-op: the flush in flight is still running
        await flushing
        await wait_for(lambda: relay._flushing is None and not relay._unlinks, timeout=5)
        assert await t._r.xlen(key) == 0
    finally:
        await t.admin.delete_prefix()
        await t.aclose()


async def test_late_events_are_judged_by_when_they_were_published_not_relayed(
    redis_url: str, redis_prefix: str
) -> None:
    # A reply published before its run ended may be relayed (and counted) after the end
    # (the publisher's relay is a second round trip): that is not a late event. One
    # published after the end is, however soon it is relayed.
    import time

    from agentbus.journal import record
    from agentbus.transports.base import RunInfo
    from agentbus.transports.redis_outbox import OutboxEntry, parts_of

    t = RedisStreamsTransport(redis_url, prefix=redis_prefix)
    await t.connect()
    try:
        began = time.time()
        await t.store.save_run(RunInfo("r-late", "late", "running", started=began))
        published = record("published", topic="x", message_type="t", event_id="e1")
        before = OutboxEntry(
            t.keys.outbox("x"), parts_of([JournalEntry("r-late", published)], None)
        )
        await t.store.save_run(
            RunInfo("r-late", "late", "completed", started=began, ended=time.time() + 0.005)
        )
        await t.store.relay.relay([before])  # published before the end, relayed after it
        info = await t.store.get_run("r-late")
        assert info is not None
        assert (info.events, info.late_events) == (1, 0)

        await asyncio.sleep(0.02)
        after = OutboxEntry(t.keys.outbox("x"), parts_of([JournalEntry("r-late", published)], None))
        await t.store.relay.relay([after])
        info = await t.store.get_run("r-late")
        assert info is not None
        assert (info.events, info.late_events) == (2, 1)
    finally:
        await t.aclose()
