"""Poison entries and a full Redis never stop workers from acking (real Redis).

* One entry whose id or topic holds a lone surrogate escape, among hundreds of valid
  events read by two workers: it alone is dead-lettered, every valid event is handled
  exactly once (it used to kill the task that writes acks, so every later event ran
  three times and was dead-lettered).
* Redis at ``maxmemory`` with ``noeviction`` (a server of the test's own): handled events
  are acked although their journal records are refused, so none runs again; publishers
  get a ``TransportUnavailable`` saying Redis is out of memory; once memory is freed
  the held records are written and publishing works again, with nobody's help.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from agentbus import Agent, Context, Envelope, Message, Runtime, TransportUnavailable, handle
from agentbus.testing import unique_prefix, wait_for
from agentbus.testing.raw_entries import add_raw
from agentbus.testing.redis_server import RedisServer

pytestmark = [pytest.mark.redis]

TOPIC = "poison.jobs"


class Job(Message, type="poison.Job"):
    n: int


class Tally(Agent, name="poison-tally"):
    """Counts executions per job; waits for ``gate`` before each (when it is closed)."""

    def __init__(self, counts: Counter[int], gate: asyncio.Event | None = None) -> None:
        super().__init__()
        self.counts = counts
        self.gate = gate

    @handle(TOPIC)
    async def on_job(self, job: Job, ctx: Context) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.counts[job.n] += 1


def _raw(**overrides: str) -> bytes:
    obj = {
        "specversion": "1.0",
        "id": "01SURR",
        "source": "test",
        "type": "poison.Job",
        "topic": TOPIC,
        "data": {"n": -1},
    }
    obj.update(overrides)
    return json.dumps(obj).encode()  # ensure_ascii: the surrogate travels as \ud800


@pytest.fixture
def shared_url(redis_url: str, redis_prefix: str) -> str:
    return f"{redis_url}?prefix={redis_prefix}"


@pytest.mark.parametrize("attribute", ["id", "topic"])
async def test_a_lone_surrogate_is_dead_lettered_and_both_workers_keep_acking(
    shared_url: str, attribute: str
) -> None:
    counts: Counter[int] = Counter()
    options = {"block_ms": 50, "visibility_timeout": 2.0, "retry_backoff": (0.01, 0.05)}
    async with Runtime(shared_url, **options) as one, Runtime(shared_url, **options) as two:
        one.add(Tally(counts))
        two.add(Tally(counts))
        await one.ready()
        await two.ready()
        add = partial(add_raw, one.transport)
        poison = await add(TOPIC, {"e": _raw(**{attribute: "01SURR\ud800"})})
        for n in range(300):
            await add(TOPIC, {"e": Envelope.for_message(Job(n=n), source="t").encode()})

        await wait_for(lambda: len(counts) == 300, timeout=30, message="300 jobs handled")
        await one.idle()
        await two.idle()
        letters = await one.transport.admin.dead_letters(TOPIC, count=1000)
        (info,) = [t for t in await one.transport.admin.topics() if t.topic == TOPIC]

    assert [(d.origin_id, d.reason) for d in letters] == [(poison, "invalid JSON")]
    assert "lone surrogate" in letters[0].error
    assert set(counts.values()) == {1}  # each exactly once: nobody stopped acking
    assert info.groups[0].pending == 0


# -- memory pressure -------------------------------------------------------------------------------
@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server that refuses writes past maxmemory (no eviction)."""
    with RedisServer(
        directory=tmp_path / "redis",
        config=["maxmemory 64mb", "maxmemory-policy noeviction"],
    ) as s:
        yield s


async def _fill(r: aioredis.Redis, prefix: str, megabytes: int) -> None:
    for batch in range(megabytes):
        async with r.pipeline(transaction=False) as pipe:
            for i in range(64):
                pipe.set(f"{prefix}filler:{batch}:{i}", b"x" * 16384)
            await pipe.execute()


async def _used(r: aioredis.Redis) -> int:
    return int((await r.info("memory"))["used_memory"])


async def test_out_of_memory_refuses_records_but_never_reruns_handled_events(
    small_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentbus")
    prefix = unique_prefix("oom")
    url = f"{small_server.url}?prefix={prefix}"
    events = 200
    counts: Counter[int] = Counter()
    gate = asyncio.Event()
    r = aioredis.Redis.from_url(small_server.url)
    options = {"block_ms": 50, "visibility_timeout": 1.0, "max_attempts": 10}
    try:
        async with Runtime(url, **options) as publisher, Runtime(url, **options) as worker:
            worker.add(Tally(counts, gate))
            await worker.ready()
            async with publisher.run("under pressure") as run:
                for n in range(events):
                    await run.publish(TOPIC, Job(n=n))
                await wait_for(lambda: worker.busy, message="handlers waiting at the gate")

                # Fill Redis past its limit: from now on it refuses every write that
                # needs memory (journal records, publishes) and every MULTI.
                await _fill(r, prefix, megabytes=8)
                await r.config_set("maxmemory", str(await _used(r) - 1024 * 1024))
                with pytest.raises(TransportUnavailable, match="out of memory"):
                    await run.publish(TOPIC, Job(n=-1))
                with pytest.raises(TransportUnavailable, match="out of memory"):
                    await publisher.publish(TOPIC, Job(n=-2))  # outside a run: its start

                gate.set()  # the handlers finish while their records are refused
                await wait_for(lambda: len(counts) == events, timeout=30, message="all handled")

                async def acked() -> bool:
                    (info,) = [t for t in await worker.transport.admin.topics() if t.topic == TOPIC]
                    return info.groups[0].pending == 0

                await wait_for(acked, timeout=10, message="every handled event acked")
                # Several visibility timeouts with memory still full: nothing comes back.
                await asyncio.sleep(3 * options["visibility_timeout"])
                refused = [m for m in caplog.messages if "out of memory" in m]
                assert refused, "the journal writes were never refused"
                assert set(counts.values()) == {1}, counts.most_common(3)
                handled_before = [
                    r for r in await publisher.journal.records(run.run_id) if r.kind == "handled"
                ]

                # Free memory: the held records and new publishes go through by themselves.
                freed = time.monotonic()
                await r.config_set("maxmemory", "64mb")
                await r.delete(*[k async for k in r.scan_iter(match=f"{prefix}filler:*")])

                async def recovered() -> bool:
                    records = await publisher.journal.records(run.run_id)
                    return sum(rec.kind == "handled" for rec in records) == events

                await wait_for(recovered, timeout=15, message="the held records written")
                await run.publish(TOPIC, Job(n=events))
                await wait_for(lambda: counts[events] == 1, message="a publish after recovery")
                recovery_s = time.monotonic() - freed
            records = await publisher.journal.records(run.run_id)
    finally:
        await r.aclose()

    handled = Counter(rec.record["event_id"] for rec in records if rec.kind == "handled")
    delivered = Counter(rec.record["event_id"] for rec in records if rec.kind == "delivered")
    assert len(handled) == len(delivered) == events + 1
    assert set(handled.values()) == set(delivered.values()) == {1}
    assert handled_before == []  # every handled record was refused while memory was full
    assert sum(counts.values()) == events + 1  # executions == events
    print(
        f"\nmemory pressure: {events + 1} events, {sum(counts.values())} handler executions, "
        f"{len(refused)} refused-write warnings, recovered {recovery_s:.2f}s after memory was freed"
    )
