"""The Redis run index, operator commands and presence on the cluster key layout.

Every script and ``MULTI`` they send must touch one hash slot (what a Redis Cluster
requires); checked here by watching every command the transport's client sends to the
shared Redis. Also: the run index's crash and race cases, and a dead runtime's prune
left half done (its record marked) finished by the next pass.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from agentbus.keys import RUN_INDEX_BUCKETS
from agentbus.retention import Presence
from agentbus.transports import RunInfo
from agentbus.transports.redis import RedisStreamsTransport
from agentbus.transports.redis_presence import FINISH_SCRIPT, MARK_SCRIPT

pytestmark = [pytest.mark.redis]

_KEYLESS = {"SCAN", "TIME", "PING", "MULTI", "EXEC", "DISCARD", "UNWATCH"}


class SlotChecker:
    """Records every command whose keys (or, in a ``MULTI``, the whole transaction's
    keys) span more than one hash slot; asks Redis which arguments are keys."""

    def __init__(self, url: str) -> None:
        self._sync = redis.Redis.from_url(url)
        self.violations: list[str] = []
        self.scripts = 0
        self.transactions = 0

    def close(self) -> None:
        self._sync.close()

    def keys_of(self, args: tuple[Any, ...]) -> list[bytes]:
        name = str(args[0]).upper()
        if name in _KEYLESS:
            return []
        if name in ("EVAL", "EVALSHA"):
            self.scripts += 1
            n = int(args[2])
            return [_b(k) for k in args[3 : 3 + n]]
        try:
            return [_b(k) for k in self._sync.command_getkeys(*args)]
        except redis.ResponseError:  # no key arguments
            return []

    def check(self, what: str, keys: list[bytes]) -> None:
        slots = {key_slot(k) for k in keys}
        if len(slots) > 1:
            self.violations.append(f"{what}: {sorted(k.decode() for k in keys)}")

    def wrap(self, client: Any) -> None:
        """Check every command ``client`` (a redis.asyncio.Redis) sends."""
        direct = client.execute_command

        async def execute_command(*args: Any, **options: Any) -> Any:
            self.check(str(args[0]), self.keys_of(args))
            return await direct(*args, **options)

        client.execute_command = execute_command
        make_pipeline = client.pipeline

        def pipeline(transaction: bool = True, shard_hint: Any = None) -> Any:
            pipe = make_pipeline(transaction=transaction, shard_hint=shard_hint)
            watched: list[bytes] = []
            watch, execute = pipe.watch, pipe.execute

            async def watch_(*names: Any) -> Any:
                watched.extend(_b(n) for n in names)
                return await watch(*names)

            async def execute_(*a: Any, **kw: Any) -> Any:
                every: list[bytes] = list(watched)
                for args, _ in pipe.command_stack:
                    keys = self.keys_of(args)
                    self.check(f"pipelined {args[0]}", keys)
                    every.extend(keys)
                if transaction and pipe.command_stack:
                    self.transactions += 1
                    self.check("MULTI", every)
                return await execute(*a, **kw)

            pipe.watch, pipe.execute = watch_, execute_
            return pipe

        client.pipeline = pipeline


def _b(key: Any) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


@pytest.fixture
def checker(redis_url: str) -> Iterator[SlotChecker]:
    c = SlotChecker(redis_url)
    yield c
    c.close()


@pytest.fixture
async def t(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStreamsTransport]:
    transport = RedisStreamsTransport(redis_url, prefix=redis_prefix)
    await transport.connect()
    try:
        yield transport
    finally:
        await transport.aclose()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Any]:
    """A plain client, for setting up state (its commands are not checked)."""
    r = aioredis.Redis.from_url(redis_url)
    try:
        yield r
    finally:
        await r.aclose()


async def journal(raw: Any, t: RedisStreamsTransport, run_id: str, n: int, ms: int = 0) -> None:
    """``n`` one-record chunks in ``run_id``'s journal, counted in its hash (the layout
    the write scripts keep); ``ms`` gives the entries that time (an old journal)."""
    for i in range(n):
        entry_id = f"{ms}-{i + 1}" if ms else "*"
        await raw.xadd(t.keys.journal(run_id), {"c": b'[{"kind":"step"}]'}, id=entry_id)
    await raw.hincrby(t.keys.run(run_id), "records", n)


def test_the_checker_catches_a_cross_slot_script(checker: SlotChecker) -> None:
    keys = checker.keys_of(("EVAL", "return 1", 2, "a:{x}", "a:{y}", "arg"))
    checker.check("EVAL", keys)
    checker.check("EVAL", checker.keys_of(("EVAL", "return 1", 2, "a:{x}", "b:{x}")))
    checker.check("UNLINK", checker.keys_of(("UNLINK", "a:{x}", "a:{y}")))
    assert len(checker.violations) == 2
    assert checker.scripts == 2


async def test_the_checker_catches_a_cross_slot_multi(
    redis_url: str, redis_prefix: str, checker: SlotChecker
) -> None:
    r = aioredis.Redis.from_url(redis_url)
    checker.wrap(r)
    try:
        for transaction in (False, True):
            async with r.pipeline(transaction=transaction) as pipe:
                pipe.hset(f"{redis_prefix}run:{{x}}", "a", 1)
                pipe.zadd(f"{redis_prefix}runs:{{y}}", {"x": 1.0})
                await pipe.execute()
    finally:
        await r.aclose()
    assert checker.transactions == 1
    assert [v.split(":")[0] for v in checker.violations] == ["MULTI"]


async def test_runs_admin_and_presence_use_one_slot_per_script_and_multi(
    t: RedisStreamsTransport, raw: Any, checker: SlotChecker
) -> None:
    k = t.keys
    # State set up directly (the publish path is not what is checked here): topics with
    # groups and dead letters, runs with journals, a runtime's inbox.
    for topic in ("s.a", "s.b", "s.c"):
        await raw.xadd(k.topic(topic), {"e": b"{}"})
        await raw.xgroup_create(k.topic(topic), "g", id="0")
        await raw.xadd(k.dead_letters(topic), {"letter": json.dumps({"origin_id": "1-1"})})
    await raw.xgroup_create(k.topic("s.a"), "listener:dead", id="$")
    await raw.xadd(k.topic("_inbox.dead"), {"e": b"{}"})
    checker.wrap(t._c.r)
    checker.wrap(t._c.blocking)

    for n in range(6):
        await t.store.save_run(RunInfo(f"run-{n}", "r", started=1000.0 + n))
        await journal(raw, t, f"run-{n}", 2, ms=1_000_000 + n)
    await journal(raw, t, "orphans", 1, ms=5)
    assert [r.run_id for r in await t.store.list_runs(limit=3)] == ["run-5", "run-4", "run-3"]
    got = await t.store.get_run("run-2")
    assert got is not None
    assert got.records == 2
    assert [i.topic for i in await t.admin.topics()] == ["_inbox.dead", "s.a", "s.b", "s.c"]
    (letter,) = await t.admin.dead_letters("s.b")
    assert await t.admin.remove_dead_letters("s.b", [letter.id]) == 1
    assert await t.admin.remove_dead_letters("s.c") == 1
    assert await t.admin.trim_acknowledged("s.a") == 0
    assert await t.admin.remove_idle_consumers("s.a", "g", idle_ms=0) == []

    await t.admin.announce("live", groups=[("s.b", "g")], inbox=None, every_ms=60_000)
    await t.admin.announce(
        "dead", groups=[("s.a", "listener:dead")], inbox="_inbox.dead", every_ms=1
    )
    await asyncio.sleep(0.05)
    assert await t.admin.heartbeat("live")
    pruned = await t.admin.prune_dead_consumers(idle_ms=10)
    assert [d.consumer for d in pruned] == ["dead"]
    await t.admin.withdraw("live")

    pruned_runs = await t.store.prune_runs(before=time.time())
    assert sorted(pruned_runs) == ["orphans", *(f"run-{n}" for n in range(6))]
    assert await t.store.list_runs() == []
    assert await t.admin.delete_prefix() > 0

    assert checker.scripts > 10  # the checks above did look at the scripts
    assert checker.violations == []


async def test_list_runs_merges_the_buckets_newest_first(
    t: RedisStreamsTransport, raw: Any
) -> None:
    ids = [f"m-{n}" for n in range(40)]
    for n, run_id in enumerate(ids):
        await t.store.save_run(RunInfo(run_id, "m", started=float(n // 2)))  # pairs tie
    assert len({t.keys.run_bucket(i) for i in ids}) > RUN_INDEX_BUCKETS // 2

    expected = sorted(ids, key=lambda i: (int(i[2:]) // 2, i), reverse=True)
    assert [r.run_id for r in await t.store.list_runs(limit=11)] == expected[:11]
    assert [r.run_id for r in await t.store.list_runs()] == expected
    assert await t.store.list_runs(limit=0) == []


async def test_an_index_entry_without_its_run_is_skipped_and_pruned(
    t: RedisStreamsTransport, raw: Any
) -> None:
    # What a save_run that crashed between its two calls leaves (the index first).
    await raw.zadd(t.keys.run_index("half"), {"half": 10.0})
    await raw.hincrby(t.keys.run("half"), "events", 1)  # counters, no metadata
    await t.store.save_run(RunInfo("whole", "w", started=5.0))

    assert [r.run_id for r in await t.store.list_runs()] == ["whole"]
    assert sorted(await t.store.prune_runs(before=time.time())) == ["half", "whole"]
    assert await raw.zcard(t.keys.run_index("half")) == 0
    assert not await raw.exists(t.keys.run("half"), t.keys.run("whole"))


async def test_a_run_saved_while_it_is_pruned_stays_indexed(
    t: RedisStreamsTransport, raw: Any
) -> None:
    # The prune script deleted the run, then a save (index entry, metadata) raced the
    # removal of its index entry: the metadata is back, so the entry must be too.
    await t.store.save_run(RunInfo("racy", "r", started=7.0))
    bucket = t.keys.run_bucket("racy")
    await t.store._runs._unindex({bucket: ["racy"]})

    assert await raw.zscore(t.keys.run_index("racy"), "racy") == 7.0
    assert [r.run_id for r in await t.store.list_runs()] == ["racy"]


async def test_record_counts_of_0_1_journals_and_unsaved_runs(
    t: RedisStreamsTransport, raw: Any
) -> None:
    # agentbus 0.1: one record per entry, no count kept.
    await t.store.save_run(RunInfo("old", "0.1", started=1.0))
    for body in (b'{"kind":"run_started"}', b'{"kind":"step"}', b'{"kind":"step"}'):
        await raw.xadd(t.keys.journal("old"), {"r": body})
    await t.store.save_run(RunInfo("new", "counted", started=2.0))
    await journal(raw, t, "new", 2)
    # Records only (no metadata, no events): no run, as before the count moved.
    await journal(raw, t, "quiet", 1, ms=5)

    old = await t.store.get_run("old")
    assert old is not None
    assert old.records == 3
    assert {(r.run_id, r.records) for r in await t.store.list_runs()} == {("old", 3), ("new", 2)}
    assert await t.store.get_run("quiet") is None

    # A journal of a run never saved goes with its counters once idle.
    assert "quiet" in await t.store.prune_runs(before=time.time() - 60)
    assert not await raw.exists(t.keys.journal("quiet"), t.keys.run("quiet"))


async def test_a_prune_stopped_after_marking_is_finished_by_the_next_pass(
    t: RedisStreamsTransport, raw: Any
) -> None:
    k = t.keys
    await raw.xadd(k.topic("p.news"), {"e": b"{}"})
    await raw.xgroup_create(k.topic("p.news"), "listener:dead", id="$")
    await raw.xadd(k.topic("_inbox.dead"), {"e": b"{}"})
    owned = [("p.news", "listener:dead")]
    await t.admin.announce("dead", groups=owned, inbox="_inbox.dead", every_ms=1)
    await asyncio.sleep(0.05)
    # A pruner marked the record, then crashed before deleting anything.
    owned_text = json.dumps([list(g) for g in owned])
    record = (k.presence("dead"), k.presences())
    assert await raw.eval(MARK_SCRIPT, 2, *record, "dead", 10, owned_text, "_inbox.dead") == 1
    assert await raw.hget(k.presence("dead"), "pruning") == b"1"
    assert not await t.admin.heartbeat("dead")  # marked: as good as gone

    # The next pass finishes it, even with a threshold under which it would be alive.
    listed = await t.admin.prune_dead_consumers(idle_ms=3_600_000, dry_run=True)
    assert [d.consumer for d in listed] == ["dead"]
    (pruned,) = await t.admin.prune_dead_consumers(idle_ms=3_600_000)

    assert (pruned.consumer, pruned.groups, pruned.inbox) == ("dead", owned, "_inbox.dead")
    assert await raw.xinfo_groups(k.topic("p.news")) == []
    assert not await raw.exists(k.topic("_inbox.dead"), k.presence("dead"))
    assert not await raw.sismember(k.presences(), "dead")
    assert await t.admin.prune_dead_consumers(idle_ms=1) == []


async def test_a_runtime_marked_while_only_slow_announces_itself_again_and_is_kept(
    t: RedisStreamsTransport, raw: Any
) -> None:
    k = t.keys
    await raw.xadd(k.topic("p.news"), {"e": b"{}"})
    await raw.xgroup_create(k.topic("p.news"), "listener:slow", id="$")
    owned = (("p.news", "listener:slow"),)
    presence = Presence(t.admin, "slow", lambda: (owned, None), every=0.001)
    await presence.beat()
    await asyncio.sleep(0.05)
    record = (k.presence("slow"), k.presences())
    owned_text = json.dumps([list(g) for g in owned])
    assert await raw.eval(MARK_SCRIPT, 2, *record, "slow", 10, owned_text, "") == 1

    await presence.beat()  # the heartbeat fails: it announces itself again

    assert await raw.hget(k.presence("slow"), "pruning") is None
    assert await t.admin.heartbeat("slow")
    assert await t.admin.prune_dead_consumers(idle_ms=3_600_000) == []
    assert await raw.sismember(k.presences(), "slow")
    # The pruner that marked it goes on: it must not delete the new record.
    assert await raw.eval(FINISH_SCRIPT, 2, *record, "slow") == 0
    assert await t.admin.heartbeat("slow")
