"""Poison entries and broken background work never stop a worker (memory transport).

One entry whose decoding, verifying or journaling fails ends in the dead-letter stream
with a reason and nothing else happens to the worker; a write that fails because of one
item sets that item aside; a background task that crashes is restarted. The Redis
versions are in tests/integration/test_poison_redis.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import pytest
from pydantic import field_validator

from agentbus import (
    Agent,
    Context,
    Envelope,
    MemoryTransport,
    Message,
    Runtime,
    Signer,
    TransportUnavailable,
    handle,
)
from agentbus._writer import Writer
from agentbus.errors import DecodeError
from agentbus.testing import wait_for
from agentbus.testing.raw_entries import add_raw
from agentbus.transports import Ack, JournalEntry
from agentbus.transports.chunks import encode_chunk

TOPIC = "poison.orders"
KEY = b"0123456789abcdef0123456789abcdef"


class Order(Message, type="poison.Order"):
    sku: str
    qty: int


class Fussy(Message, type="poison.Fussy"):
    sku: str

    @field_validator("sku")
    @classmethod
    def _no_boom(cls, value: str) -> str:
        if value == "boom":
            raise RuntimeError("a validator that raises what pydantic does not wrap")
        return value


class Clerk(Agent, name="poison-clerk"):
    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.handled: list[str] = []
        self.delay = delay

    @handle(TOPIC)
    async def take(self, order: Order, ctx: Context) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.handled.append(order.sku)

    @handle(TOPIC)
    async def fuss(self, fussy: Fussy, ctx: Context) -> None:
        self.handled.append(fussy.sku)


def raw_event(**overrides: Any) -> bytes:
    obj: dict[str, Any] = {
        "specversion": "1.0",
        "id": "01POISON000000000000000000",
        "source": "test",
        "type": "poison.Order",
        "topic": TOPIC,
        "data": {"sku": "bad", "qty": 1},
    }
    obj.update(overrides)
    return json.dumps(obj).encode()  # ensure_ascii: a lone surrogate becomes \udXXX


def valid(sku: str) -> bytes:
    return Envelope.for_message(Order(sku=sku, qty=1), source="test", topic=TOPIC).encode()


async def letters_by_origin(rt: Runtime, count: int) -> dict[str, tuple[str, str]]:
    async def enough() -> bool:
        return len(await rt.transport.admin.dead_letters(TOPIC, count=1000)) >= count

    await wait_for(enough, timeout=10, message=f"{count} dead letters")
    letters = await rt.transport.admin.dead_letters(TOPIC, count=1000)
    return {d.origin_id: (d.reason, d.error) for d in letters}


def memory() -> MemoryTransport:
    return MemoryTransport(journal_path=":memory:")


# -- decoding ----------------------------------------------------------------------------------
def test_decode_refuses_lone_surrogates_huge_numbers_and_deep_nesting() -> None:
    cases = {
        "surrogate": raw_event(id="01SURR\ud800"),
        "low surrogate in a key": raw_event(data={"sku": "x", "qty": 1, "\udc00": 1}),
        "digits": raw_event().replace(b'"qty": 1', b'"qty": ' + b"7" * 5000),
        "deep": raw_event().replace(b'"qty": 1', b'"qty": 1, "x": ' + b"[" * 300 + b"]" * 300),
    }
    details = {}
    for name, raw in cases.items():
        with pytest.raises(DecodeError) as info:
            Envelope.decode(raw)
        assert info.value.reason == "invalid JSON", name
        details[name] = info.value.detail
    assert "lone surrogate '\\ud800'" in details["surrogate"]
    assert "4300 digits" in details["digits"]
    assert "200 levels" in details["deep"]
    # What is Unicode, a long but convertible number, and nesting within the limit decode.
    assert Envelope.decode(raw_event(id="01PAIR\ud83d\ude00")).id == "01PAIR\U0001f600"
    assert Envelope.decode(raw_event(id="01ESC\\ud800")).id == "01ESC\\ud800"  # a backslash
    long = Envelope.decode(raw_event().replace(b'"qty": 1', b'"qty": ' + b"7" * 4300))
    assert len(str(long.data["qty"])) == 4300
    deep = b"[" * 190 + b"]" * 190
    assert Envelope.decode(raw_event().replace(b'"qty": 1', b'"qty": 1, "x": ' + deep))


async def test_entries_that_raised_past_decoding_are_dead_lettered_at_once() -> None:
    clerk = Clerk()
    async with Runtime(transport=memory(), block_ms=20, max_attempts=2) as rt:
        rt.add(clerk)
        await rt.ready()
        add = partial(add_raw, rt.transport)
        surrogate = await add(TOPIC, {"e": raw_event(id="01SURR\ud800")})
        topic = await add(TOPIC, {"e": raw_event(topic="t\ud800")})
        digits = await add(TOPIC, {"e": raw_event().replace(b'"qty": 1', b'"qty": ' + b"7" * 5000)})
        validator = await add(TOPIC, {"e": raw_event(type="poison.Fussy", data={"sku": "boom"})})
        for n in range(20):
            await add(TOPIC, {"e": valid(f"ok{n}")})

        letters = await letters_by_origin(rt, 4)
        await wait_for(lambda: len(clerk.handled) == 20, message="the valid events handled")
        await rt.idle()

    assert letters[surrogate][0] == letters[topic][0] == letters[digits][0] == "invalid JSON"
    assert letters[validator] == (
        "invalid payload",
        "RuntimeError: a validator that raises what pydantic does not wrap",
    )
    assert sorted(clerk.handled) == sorted(f"ok{n}" for n in range(20))


async def test_anything_verifying_raises_is_a_bad_signature() -> None:
    # Whatever the signer raises (here a bug of its own on one key id), the entry is not
    # verified and goes to the dead letters with the reason; non-ASCII text in `sig` is
    # a plain mismatch.
    class Flaky(Signer):
        def verify(self, env: Envelope, **options: Any) -> None:
            if env.extensions.get("sig") == "boom":
                raise TypeError("a bug in the signer")
            super().verify(env, **options)

    signer = Flaky({"k1": KEY}, "k1")
    clerk = Clerk()
    async with Runtime(transport=memory(), block_ms=20, signer=signer) as rt:
        rt.add(clerk)
        await rt.ready()
        add = partial(add_raw, rt.transport)
        non_ascii = await add(TOPIC, {"e": raw_event(sigkid="k1", sig="é")})
        buggy = await add(TOPIC, {"e": raw_event(sigkid="k1", sig="boom")})
        surrogate = await add(TOPIC, {"e": raw_event(id="01\ud800", sigkid="k1", sig="x")})
        await rt.publish(TOPIC, Order(sku="signed", qty=1))

        letters = await letters_by_origin(rt, 3)
        await wait_for(lambda: clerk.handled == ["signed"], message="the signed event handled")

    assert letters[non_ascii][0] == "bad signature"
    reason, error = letters[buggy]
    assert reason == "bad signature"
    assert "TypeError: a bug in the signer" in error
    assert letters[surrogate][0] == "invalid JSON"  # refused before anyone verifies it


async def test_the_delivery_count_is_checked_before_decoding() -> None:
    # An entry delivered more often than any handler allows ends before it is decoded:
    # were decoding what kills the worker, it would not get to do it again.
    transport = memory()
    await transport.create_group(TOPIC, "poison-clerk")
    garbage = await add_raw(transport, TOPIC, {"e": b"{"})
    good = await add_raw(transport, TOPIC, {"e": valid("was-pending")})
    await transport.read_group("poison-clerk", "c1", [TOPIC], count=10, block_ms=None)
    for _ in range(3):  # three more deliveries to the same consumer: counts 2, 3, 4
        await transport.read_group(
            "poison-clerk", "c1", [TOPIC], count=10, block_ms=None, pending=True
        )
    clerk = Clerk()
    async with Runtime(transport=transport, consumer="c1", block_ms=20, max_attempts=3) as rt:
        rt.add(clerk)
        letters = await letters_by_origin(rt, 2)
    assert letters[garbage][0] == "max attempts exceeded"  # not "invalid JSON"
    assert letters[good][0] == "max attempts exceeded"
    assert "delivered 5 times (max_attempts=3)" in letters[good][1]
    assert clerk.handled == []


# -- writing -----------------------------------------------------------------------------------
def test_a_record_that_cannot_be_encoded_is_written_as_text_and_spares_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entries = [
        JournalEntry("r", {"kind": "handled", "event_id": "a"}),
        JournalEntry("r", {"kind": "step", "note": "bad \ud800", "obj": object()}),
        JournalEntry("r", {"kind": "published", "event_id": "b"}, raw_event=b'{"id":"b"}'),
    ]
    with caplog.at_level(logging.WARNING, logger="agentbus"):
        records = json.loads(encode_chunk(entries))
    assert records[0] == {"kind": "handled", "event_id": "a"}
    assert records[1]["note"] == "bad \\ud800"
    assert records[1]["obj"].startswith("<object object at")
    assert records[2] == {"kind": "published", "event_id": "b", "event": {"id": "b"}}
    assert any("'step' record of run 'r' cannot be encoded" in m for m in caplog.messages)


class Picky(MemoryTransport):
    """Refuses any batch holding a record marked ``poison``, as a broken store might."""

    async def ack(
        self,
        acks: Sequence[Ack],
        *,
        records: Sequence[JournalEntry] = (),
        mark: Sequence[tuple[str, int]] = (),
    ) -> None:
        if any(e.record.get("poison") for e in records):
            raise ValueError("cannot store a poison record")
        await super().ack(acks, records=records, mark=mark)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        write = self.store.write_journal

        async def write_journal(records: Sequence[JournalEntry]) -> None:
            if any(e.record.get("poison") for e in records):
                raise ValueError("cannot store a poison record")
            await write(records)

        self.store.write_journal = write_journal  # type: ignore[method-assign]


async def test_the_writer_sets_aside_the_one_item_that_breaks_a_batch() -> None:
    transport = Picky(journal_path=":memory:")
    await transport.create_group(TOPIC, "g")
    ids = [await add_raw(transport, TOPIC, {"e": valid(str(n))}) for n in range(3)]
    await transport.read_group("g", "c", [TOPIC], count=10, block_ms=None)
    writer = Writer(transport)
    writer.start()
    writer.ack(Ack(TOPIC, "g", ids[0]), JournalEntry("r", {"kind": "handled", "n": 0}))
    writer.record(JournalEntry("r", {"kind": "step", "poison": True}))
    writer.ack(Ack(TOPIC, "g", ids[1]), JournalEntry("r", {"kind": "handled", "n": 1}))
    await writer.flush()
    writer.ack(Ack(TOPIC, "g", ids[2]), JournalEntry("r", {"kind": "handled", "n": 2}))
    await writer.flush()  # the writer lives on

    assert [r.record for r in await transport.store.read_journal("r")] == [
        {"kind": "handled", "n": 0},
        {"kind": "handled", "n": 1},
        {"kind": "handled", "n": 2},
    ]
    (info,) = [t for t in await transport.admin.topics() if t.topic == TOPIC]
    assert info.groups[0].pending == 0
    await writer.aclose()
    await transport.aclose()


class Full(MemoryTransport):
    """Refuses journal records (but not acks) while ``full``, as Redis out of memory."""

    full = True
    refused = 0

    async def ack(
        self,
        acks: Sequence[Ack],
        *,
        records: Sequence[JournalEntry] = (),
        mark: Sequence[tuple[str, int]] = (),
    ) -> None:
        if records and self.full:
            self.refused += 1
            raise TransportUnavailable("out of memory")
        await super().ack(acks, records=records, mark=mark)


async def test_handled_events_are_acked_while_their_records_are_refused() -> None:
    transport = Full(journal_path=":memory:")
    clerk = Clerk()
    async with Runtime(transport=transport, block_ms=20, visibility_timeout=0.3) as rt:
        rt.add(clerk)
        await rt.ready()
        async with rt.run("full") as run:
            transport.full = False  # the run's own records go in
            for n in range(5):
                await run.publish(TOPIC, Order(sku=f"o{n}", qty=1))
            transport.full = True
            await wait_for(lambda: len(clerk.handled) == 5, message="all handled")

            async def acked() -> bool:
                (info,) = [t for t in await transport.admin.topics() if t.topic == TOPIC]
                return info.groups[0].pending == 0

            await wait_for(acked, message="acks written while the records are refused")
            refused = transport.refused
            await asyncio.sleep(0.8)  # past the visibility timeout: nothing to claim
            assert transport.refused > refused  # the records are still being retried
            assert sorted(clerk.handled) == [f"o{n}" for n in range(5)]  # no re-run
            kinds = [r.kind for r in await rt.journal.records(run.run_id)]
            assert "handled" not in kinds
            transport.full = False  # memory freed: the held records follow by themselves
            await rt.writer.flush()
            kinds = [r.kind for r in await rt.journal.records(run.run_id)]
        assert kinds.count("handled") == 5
        assert kinds.count("delivered") == 5


# -- supervision -------------------------------------------------------------------------------
class Flaky(MemoryTransport):
    """Raises an unexpected error from one method, once."""

    def __init__(self, method: str) -> None:
        super().__init__(journal_path=":memory:")
        self.method = method
        self.calls = 0

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name != object.__getattribute__(self, "method"):
            return attr

        async def once(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError(f"{name} broke unexpectedly")
            return await attr(*args, **kwargs)

        return once


async def test_a_crashed_lease_task_is_restarted(caplog: pytest.LogCaptureFixture) -> None:
    transport = Flaky("extend_lease")
    clerk = Clerk(delay=1.0)
    async with Runtime(transport=transport, block_ms=20, visibility_timeout=0.15) as rt:
        rt.add(clerk)
        await rt.ready()
        await rt.publish(TOPIC, Order(sku="slow", qty=1))
        await wait_for(lambda: transport.calls >= 3, message="leases renewed after the crash")
        await wait_for(lambda: clerk.handled == ["slow"], message="the slow handler done")
    assert any("agentbus-leases crashed" in m for m in caplog.messages)


async def test_a_read_loop_survives_any_transport_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Not only TransportError: e.g. redis-py's cluster exceptions are not RedisErrors.
    transport = Flaky("read_group")
    clerk = Clerk()
    async with Runtime(transport=transport, block_ms=20) as rt:
        rt.add(clerk)
        await rt.ready()
        await rt.publish(TOPIC, Order(sku="after", qty=1))
        await wait_for(lambda: clerk.handled == ["after"], message="read after the crash")
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert any("reading for 'poison-clerk' raised" in r.getMessage() for r in errors)
    assert any(r.exc_info for r in errors)  # the traceback, for an unexpected error
