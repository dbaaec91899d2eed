"""Retention end to end: the runtime's maintenance step, the races it must not lose
to, the lossy cap that is gone, journaled dead-letter retry and pool exhaustion.

Runtime tests run on both backends (``url_for``); the race and the Redis-only
behaviours on the shared test Redis under the test's own prefix.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentbus import (
    Agent,
    Context,
    MemoryTransport,
    Message,
    Reject,
    Retention,
    Runtime,
    TransportUnavailable,
    UsageError,
    handle,
)
from agentbus.testing import wait_for
from agentbus.testing.raw_entries import add_raw
from agentbus.transports import Ack, Transport

FAST: dict[str, Any] = {"block_ms": 100, "visibility_timeout": 5.0, "grace_period": 1.0}


class Tick(Message, type="ret.Tick"):
    n: int


class Ticker(Agent, name="ticker"):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    @handle("ret.ticks")
    async def on_tick(self, tick: Tick, ctx: Context) -> Tick:
        self.seen.append(tick.n)
        return tick


class Picky(Agent, name="picky"):
    @handle("ret.picky")
    async def on_tick(self, tick: Tick, ctx: Context) -> None:
        if tick.n == 13:
            raise Reject("thirteen")


async def length(transport: Transport, topic: str) -> int:
    for info in await transport.admin.topics():
        if info.topic == topic:
            return info.length
    return 0


@pytest.fixture
async def runtime_for(backend: str, url_for: str) -> AsyncIterator[Any]:
    made: list[Runtime] = []

    def make(*agents: Agent, **options: Any) -> Runtime:
        rt = Runtime(url_for, **{**FAST, **options})
        rt.add(*agents)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.aclose()


# -- the maintenance step -------------------------------------------------------------------------
async def test_maintenance_trims_handled_events_and_keeps_unhandled_ones(runtime_for: Any) -> None:
    ticker = Ticker()
    rt: Runtime = runtime_for(ticker, retention=Retention(interval=0.05))
    await rt.start()
    async with rt.run("ticks") as run:
        for n in range(50):
            await run.publish("ret.ticks", Tick(n=n))
    await wait_for(lambda: len(ticker.seen) == 50, message="50 ticks handled")

    # Handled and acknowledged: the periodic step deletes them without being asked.
    async def trimmed() -> bool:
        return await length(rt.transport, "ret.ticks") == 0

    await wait_for(trimmed, timeout=10, message="ret.ticks trimmed to nothing")

    # A group whose workers are away keeps everything it has not handled.
    await rt.transport.create_group("ret.ticks", "absent", from_start=False)
    for n in range(20):
        await rt.publish("ret.ticks", Tick(n=n))
    await wait_for(lambda: len(ticker.seen) == 70, message="20 more ticks handled")
    report = await rt.maintenance.run_once()
    assert report.trimmed["ret.ticks"] == 0
    assert await length(rt.transport, "ret.ticks") == 20
    got = await rt.transport.read_group("absent", "late", ["ret.ticks"], count=100, block_ms=None)
    assert len(got) == 20


async def test_maintenance_trims_the_reply_inbox_below_what_was_read(runtime_for: Any) -> None:
    rt: Runtime = runtime_for(Ticker(), retention=Retention(interval=None))
    await rt.start()
    for n in range(5):
        assert await rt.request("ret.ticks", Tick(n=n), timeout=5) == Tick(n=n)
    inbox = rt._requests.inbox
    assert await length(rt.transport, inbox) == 5

    report = await rt.maintenance.run_once()

    assert report.trimmed[inbox] == 5
    assert await length(rt.transport, inbox) == 0
    assert await rt.request("ret.ticks", Tick(n=9), timeout=5) == Tick(n=9)


async def test_maintenance_removes_idle_consumers_of_its_groups(runtime_for: Any) -> None:
    ticker = Ticker()
    rt: Runtime = runtime_for(ticker, retention=Retention(interval=None, idle_consumers=0.3))
    # Before this runtime starts, two consumers of its group went away for good: one with
    # nothing pending, one that still holds an entry (claimed after the visibility
    # timeout, never dropped with its consumer).
    t = rt.transport
    await t.connect()
    await t.create_group("ret.ticks", "ticker")
    for ghost in ("ghost", "holder"):
        await t.publish("ret.ticks", b"{}")
        (d,) = await t.read_group("ticker", ghost, ["ret.ticks"], count=1, block_ms=None)
        if ghost == "ghost":
            await t.ack([Ack("ret.ticks", "ticker", d.entry_id)])
    await rt.start()
    removed: list[str] = []

    async def ghost_removed() -> bool:
        report = await rt.maintenance.run_once()
        removed.extend(report.consumers.get(("ret.ticks", "ticker"), []))
        return "ghost" in removed

    await wait_for(ghost_removed, timeout=10, message="the idle consumer removed")
    assert "holder" not in removed
    info = {i.topic: i for i in await rt.transport.admin.topics()}["ret.ticks"]
    assert [g.pending for g in info.groups if g.name == "ticker"] == [1]
    # Removing a consumer loses nothing: the group goes on handling new events.
    await rt.publish("ret.ticks", Tick(n=3))
    await wait_for(lambda: 3 in ticker.seen, message="tick 3 handled")


async def test_maintenance_prunes_runs_past_the_journal_retention(runtime_for: Any) -> None:
    rt: Runtime = runtime_for(Ticker(), retention=Retention(interval=None, journal=0.2))
    await rt.start()
    async with rt.run("old") as old:
        await old.publish("ret.ticks", Tick(n=1))
    await rt.idle()
    await asyncio.sleep(0.3)  # the old run's last record falls out of the 0.2 s window
    async with rt.run("new") as new:
        await new.publish("ret.ticks", Tick(n=2))
    await rt.idle()

    report = await rt.maintenance.run_once()

    assert report.runs == [old.run_id]
    assert await rt.transport.store.get_run(old.run_id) is None
    assert await rt.transport.store.read_journal(old.run_id) == []
    assert [r.run_id for r in await rt.transport.store.list_runs()] == [new.run_id]


def test_retention_settings_are_checked() -> None:
    with pytest.raises(UsageError, match=r"Retention.journal must be positive or None, got 0"):
        Retention(journal=0)
    with pytest.raises(UsageError, match="interval"):
        Retention(interval=-1.0)


# -- Redis: races, the old cap, pools ----------------------------------------------------------------
@pytest.mark.redis
async def test_trimming_during_publishes_reads_and_acks_loses_nothing(
    redis_url: str, redis_prefix: str
) -> None:
    from agentbus.transports.redis import RedisStreamsTransport

    topic, total = "ret.race", 3000
    t = RedisStreamsTransport(redis_url, prefix=redis_prefix)
    await t.connect()
    try:
        await t.create_group(topic, "a")
        await t.create_group(topic, "b")
        got: dict[str, list[int]] = {"a": [], "b": []}
        published = asyncio.Event()
        trims: list[int] = []

        async def publish() -> None:
            for n in range(total):
                await t.publish(topic, str(n).encode())
                if n % 100 == 0:
                    await asyncio.sleep(0)
            published.set()

        async def consume(group: str, consumer: str) -> None:
            rng = random.Random(consumer)
            while not (published.is_set() and len(got[group]) >= total):
                batch = await t.read_group(
                    group, consumer, [topic], count=rng.randint(1, 40), block_ms=20
                )
                for d in batch:
                    got[group].append(int(d.payload or b"-1"))
                # Ack in random order and sometimes late: pending entries must survive.
                rng.shuffle(batch)
                await t.ack([Ack(topic, group, d.entry_id) for d in batch])

        async def trim() -> None:
            while not (len(got["a"]) >= total and len(got["b"]) >= total):
                trims.append(await t.admin.trim_acknowledged(topic))
                await asyncio.sleep(0.002)

        async def late_group() -> None:
            # A group created from the start mid-stream gets everything not yet trimmed,
            # contiguously up to the end: trimming never races it into a hole.
            await asyncio.sleep(0.05)
            await t.create_group(topic, "late", from_start=True)

        await asyncio.wait_for(
            asyncio.gather(
                publish(),
                consume("a", "a1"),
                consume("a", "a2"),
                consume("b", "b1"),
                trim(),
                late_group(),
            ),
            timeout=90,
        )
        assert sorted(got["a"]) == list(range(total))
        assert sorted(got["b"]) == list(range(total))
        assert sum(trims) > 0  # trimming did happen while the others ran
        late = await t.read_group("late", "l", [topic], count=total, block_ms=None)
        numbers = [int(d.payload or b"-1") for d in late]
        assert numbers
        assert numbers == list(range(numbers[0], total))
        # Once the late group is done too, nothing is left.
        await t.ack([Ack(topic, "late", d.entry_id) for d in late])
        await t.admin.trim_acknowledged(topic)
        assert await length(t, topic) == 0
    finally:
        await t.aclose()


@pytest.mark.redis
def test_the_lossy_length_cap_is_refused(redis_url: str) -> None:
    from agentbus.transports.redis import RedisStreamsTransport

    with pytest.raises(UsageError, match=r"stream_maxlen is no longer supported \(got 1000\)"):
        RedisStreamsTransport(redis_url, stream_maxlen=1000)


@pytest.mark.redis
async def test_pool_exhaustion_is_reported_as_such(redis_url: str, redis_prefix: str) -> None:
    from agentbus.transports.redis import RedisStreamsTransport

    t = RedisStreamsTransport(f"{redis_url}?max_connections=1", prefix=redis_prefix)
    await t.connect()
    try:
        holder = asyncio.create_task(t.read_tail("ret.pool", "$", count=1, block_ms=2000))
        await asyncio.sleep(0.2)  # the first blocking read holds the pool's only connection
        with pytest.raises(TransportUnavailable) as info:
            await t.read_tail("ret.pool", "$", count=1, block_ms=2000)
        message = str(info.value)
        assert "connection pool" in message
        assert "exhausted" in message
        assert "max_connections=" in message
        assert "is redis-server running" not in message
        holder.cancel()
    finally:
        await t.aclose()


@pytest.mark.redis
async def test_dlq_retry_is_journaled_and_republishes_the_original_bytes(
    redis_url: str, redis_prefix: str
) -> None:
    url = f"{redis_url}?prefix={redis_prefix}"
    async with Runtime(url, **FAST) as rt:
        rt.add(Picky())
        await rt.ready()
        async with rt.run("picky") as run:
            await run.publish("ret.picky", Tick(n=13))
        (letter,) = await _letters(rt, "ret.picky", 1)

        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "agentbus", "dlq", "retry", "ret.picky", "--url", url],
            capture_output=True,
            text=True,
            timeout=60,
        )

        assert done.returncode == 0, done.stderr
        assert "re-published 1 dead letters" in done.stdout
        # The retried entry carries the very bytes of the one that was dead-lettered.
        entries = await rt.transport.read_tail("ret.picky", "0-0", count=10, block_ms=None)
        by_id = {d.entry_id: d.payload for d in entries}
        retried = [d for d in entries if d.entry_id != letter.origin_id]
        assert len(retried) == 1
        assert retried[0].payload == by_id[letter.origin_id]
        # ... and the run says who did it, when, from which letter.
        records = await rt.transport.store.read_journal(run.run_id)
        (rec,) = [r.record for r in records if r.kind == "dlq_retried"]
        event_id = json.loads(by_id[letter.origin_id] or b"{}")["id"]
        assert rec["dead_letter_id"] == letter.id
        assert (rec["topic"], rec["event_id"], rec["origin_id"]) == (
            "ret.picky",
            event_id,
            letter.origin_id,
        )
        assert "@" in rec["by"]
        assert rec["time"] > 0
        # Rejected again (Reject): a second letter, for the same event.
        (again,) = await _letters(rt, "ret.picky", 1)
        assert again.id != letter.id


async def _letters(rt: Runtime, topic: str, n: int) -> list[Any]:
    async def enough() -> bool:
        return len(await rt.transport.admin.dead_letters(topic)) >= n

    await wait_for(enough, timeout=10, message=f"{n} dead letters on {topic}")
    return await rt.transport.admin.dead_letters(topic)


async def test_dlq_retry_skips_letters_without_an_event() -> None:
    from agentbus.dead_letters import retry_dead_letters

    t = MemoryTransport()
    await t.create_group("ret.x", "g")
    await add_raw(t, "ret.x", {"junk": b"1"})
    (d,) = await t.read_group("g", "c", ["ret.x"], count=1, block_ms=None)
    body = {"origin_id": d.entry_id, "reason": "not an agentbus event", "payload": "{'junk'}"}
    await t.dead_letter("ret.x", "g", d.entry_id, body)
    (letter,) = await t.admin.dead_letters("ret.x")

    outcome = await retry_dead_letters(t, "ret.x", [letter.id, "1-1"], by="ops@host")

    assert outcome.retried == []
    assert "not an agentbus event" in outcome.skipped[letter.id]
    assert outcome.skipped["1-1"] == "no such dead letter on 'ret.x'"
    assert await t.admin.dead_letters("ret.x") == [letter]
    await t.aclose()
