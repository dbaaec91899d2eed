"""The Redis transport's packed reads: one script reply per batch, same entries, same order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agentbus.testing.raw_entries import add_raw
from agentbus.transports import Ack, Delivery
from agentbus.transports.redis import RedisStreamsTransport

pytestmark = [pytest.mark.redis]


@pytest.fixture
async def t(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStreamsTransport]:
    transport = RedisStreamsTransport(redis_url, prefix=redis_prefix)
    await transport.connect()
    try:
        yield transport
    finally:
        await transport.aclose()


async def test_plain_and_odd_entries_keep_their_order_and_bytes(
    t: RedisStreamsTransport,
) -> None:
    await t.create_group("a", "g")
    tricky = b'{"x": "two words\nand \x00 a NUL \xff"}'
    ids = [
        await t.publish("a", b'{"n":1}'),
        await add_raw(t, "a", {"x": b"garbage"}),
        await t.publish("a", tricky),
        await add_raw(t, "a", {"e": b'{"n":2}', "extra": b"1"}),
        await t.publish("a", b""),
        await add_raw(t, "a", {"e ": b"a field name with a space"}),
    ]

    got = await t.read_group("g", "c", ["a"], count=10, block_ms=100)

    assert [d.entry_id for d in got] == ids
    assert [d.payload for d in got] == [b'{"n":1}', None, tricky, b'{"n":2}', b"", None]
    assert got[0].fields == {"e": b'{"n":1}'}
    assert got[1].fields == {"x": b"garbage"}
    assert got[3].fields == {"e": b'{"n":2}', "extra": b"1"}
    assert got[5].fields == {"e ": b"a field name with a space"}
    assert all(d.topic == "a" and d.delivery_count == 1 for d in got)
    (info,) = [i for i in await t.admin.topics() if i.topic == "a"]
    assert info.groups[0].pending == 6  # read through the script, pending like any read
    await t.ack([Ack("a", "g", d.entry_id) for d in got])
    assert await t.read_group("g", "c", ["a"], count=10, block_ms=None, pending=True) == []


async def test_one_read_covers_several_topics(t: RedisStreamsTransport) -> None:
    for topic in ("a", "b"):
        await t.create_group(topic, "g")
    await t.publish("a", b"1")
    await t.publish("b", b"2")
    await t.publish("a", b"3")

    got = await t.read_group("g", "c", ["a", "b"], count=10, block_ms=100)

    assert sorted((d.topic, d.payload) for d in got) == [("a", b"1"), ("a", b"3"), ("b", b"2")]
    assert [d.payload for d in got if d.topic == "a"] == [b"1", b"3"]


async def test_a_read_with_nothing_waiting_blocks_until_an_entry_arrives(
    t: RedisStreamsTransport,
) -> None:
    await t.create_group("a", "g")
    reader = asyncio.create_task(t.read_group("g", "c", ["a"], count=10, block_ms=5000))
    await asyncio.sleep(0.2)
    assert not reader.done()
    await t.publish("a", b"late")
    got = await asyncio.wait_for(reader, timeout=5)
    assert [d.payload for d in got] == [b"late"]


async def test_count_is_respected(t: RedisStreamsTransport) -> None:
    await t.create_group("a", "g")
    await t.publish_many([("a", str(n).encode()) for n in range(10)])
    first = await t.read_group("g", "c", ["a"], count=4, block_ms=100)
    rest = await t.read_group("g", "c", ["a"], count=10, block_ms=100)
    assert [d.payload for d in first + rest] == [str(n).encode() for n in range(10)]
    assert len(first) == 4


async def test_a_backlog_is_read_through_the_script_without_a_blocking_read(
    t: RedisStreamsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    await t.create_group("a", "g")
    await t.publish_many([("a", str(n).encode()) for n in range(5)])

    async def no_blocking_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("a backlog must come from the packed read")

    monkeypatch.setattr(t._c.blocking, "xreadgroup", no_blocking_read)
    got = await t.read_group("g", "c", ["a"], count=10, block_ms=1000)
    assert [d.payload for d in got] == [str(n).encode() for n in range(5)]
    assert got[0] == Delivery("a", got[0].entry_id, b"0")  # compares by fields


async def test_a_reader_at_idle_blocks_without_a_script_round_trip(
    t: RedisStreamsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    await t.create_group("a", "g")
    calls: list[object] = []
    script = t._read_script

    async def counted(**kwargs: object) -> object:
        calls.append(kwargs)
        return await script(**kwargs)

    monkeypatch.setattr(t, "_read_script", counted)
    await t.publish("a", b"one")
    assert len(await t.read_group("g", "c", ["a"], count=10, block_ms=100)) == 1
    assert len(calls) == 1  # the first read tries the script
    await t.publish("a", b"two")
    assert len(await t.read_group("g", "c", ["a"], count=10, block_ms=100)) == 1
    assert len(calls) == 1  # one entry last time: straight to the blocking read
    await t.publish_many([("a", b"x"), ("a", b"y")])
    await t.read_group("g", "c", ["a"], count=10, block_ms=100)  # blocking read finds 2
    assert len(await t.read_group("g", "c", ["a"], count=10, block_ms=100)) == 0
    assert len(calls) == 2  # a backlog last time: the script again

    await t.delete_group("a", "g")
    assert ("g", "c") not in t._busy  # forgotten with its group


async def test_a_blocking_read_left_running_is_reported_until_its_entries_are_returned(
    t: RedisStreamsTransport,
) -> None:
    # "a" and "b" hash to different slots: one blocking read each. A partition is given
    # up only once no read of it is in flight (else an entry read after the release is
    # handled twice: here, and by the next owner who claims what is pending).
    for topic in ("a", "b"):
        await t.create_group(topic, "g")
    reader = asyncio.create_task(t.read_group("g", "c", ["a", "b"], count=10, block_ms=3000))
    await asyncio.sleep(0.2)
    await t.publish("a", b"1")
    got = await asyncio.wait_for(reader, timeout=5)
    assert [d.payload for d in got] == [b"1"]
    assert t.reads_in_flight("g", "c") == {"b"}  # still blocked on "b"
    assert t.reads_in_flight("g", "other") == set()

    await t.publish("b", b"2")
    await asyncio.sleep(0.2)
    assert t.reads_in_flight("g", "c") == {"b"}  # done, not returned yet
    got = await t.read_group("g", "c", ["a"], count=10, block_ms=100)  # "b" not named
    assert [(d.topic, d.payload) for d in got] == [("b", b"2")]
    assert t.reads_in_flight("g", "c") == set()
