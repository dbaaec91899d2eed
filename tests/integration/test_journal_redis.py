"""The Redis journal's storage format: chunks of records, and journals written by 0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from agentbus.transports import JournalEntry, RunInfo
from agentbus.transports.redis import RedisStreamsTransport

pytestmark = [pytest.mark.redis]


@pytest.fixture
async def redis_transport(
    redis_url: str, redis_prefix: str
) -> AsyncIterator[RedisStreamsTransport]:
    t = RedisStreamsTransport(redis_url, prefix=redis_prefix)
    await t.connect()
    try:
        yield t
    finally:
        await t.aclose()


async def test_a_batch_of_records_is_one_chunk_entry(
    redis_transport: RedisStreamsTransport, redis_url: str, redis_prefix: str
) -> None:
    t = redis_transport
    await t.store.save_run(RunInfo("r1", "chunks", started=1.0))
    await t.store.write_journal([JournalEntry("r1", {"kind": "step", "n": n}) for n in range(5)])
    await t.publish("t", b'{"id":"e"}', records=[JournalEntry("r1", {"kind": "published"})])
    await t.store.write_journal([JournalEntry("r2", {"kind": "step", "n": 9})])  # another run

    r = aioredis.Redis.from_url(redis_url)
    try:
        assert await r.xlen(t.keys.journal("r1")) == 2  # two writes, two chunks
    finally:
        await r.aclose()
    records = await t.store.read_journal("r1")
    assert [r.record.get("n") for r in records] == [0, 1, 2, 3, 4, None]
    assert len({r.seq for r in records}) == 6
    run = await t.store.get_run("r1")
    assert run is not None
    assert (run.events, run.records) == (1, 6)
    (listed,) = [i for i in await t.store.list_runs() if i.run_id == "r1"]
    assert listed.records == 6


async def test_a_journal_written_one_record_per_entry_still_reads(
    redis_transport: RedisStreamsTransport, redis_url: str, redis_prefix: str
) -> None:
    t = redis_transport
    await t.store.save_run(RunInfo("old", "from 0.1", started=1.0))
    r = aioredis.Redis.from_url(redis_url)
    try:
        for body in (b'{"kind":"run_started"}', b'{"kind":"step","n":1}'):
            await r.xadd(t.keys.journal("old"), {"r": body})
    finally:
        await r.aclose()

    assert [x.kind for x in await t.store.read_journal("old")] == ["run_started", "step"]
    run = await t.store.get_run("old")
    assert run is not None
    assert run.records == 2  # no count was kept: one record per entry
