"""Conformance checks of the :class:`~agentbus.transports.Broker` role.

Where memory and Redis could differ, the contract follows Redis 7 (``XREADGROUP``
from ``0`` and ``XAUTOCLAIM`` count a delivery, ``XCLAIM JUSTID`` does not).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ...errors import GroupNotFound, TransportClosed
from ...transports import Ack, EntryState, RunInfo, Transport
from ..raw_entries import add_raw
from ._base import (
    IDLE_MS,
    TOPIC,
    entry,
    group_info,
    id_key,
    letter,
    numbers,
    payload,
    publish_n,
    read,
)
from .spread import SpreadChecks

__all__ = ["BrokerChecks"]


class BrokerChecks(SpreadChecks):
    """Publishing, groups, pending lists, claims, leases, dead letters, tails, closing
    (and :class:`SpreadChecks`: calls over several topics)."""

    async def test_publish_then_read_in_order(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        ids = await publish_n(transport, 5)
        assert ids == sorted(ids, key=id_key)
        assert len(set(ids)) == 5

        got = await read(transport, "c1")

        assert [d.entry_id for d in got] == ids
        assert numbers(got) == [0, 1, 2, 3, 4]
        assert all(d.topic == TOPIC and d.delivery_count == 1 for d in got)
        assert got[0].fields == {"e": payload(0)}
        assert await read(transport, "c1") == []

    async def test_read_respects_count(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 5)

        assert numbers(await read(transport, "c1", count=2)) == [0, 1]
        assert numbers(await read(transport, "c1", count=2)) == [2, 3]
        assert numbers(await read(transport, "c1", count=2)) == [4]

    async def test_publish_many_spans_topics_in_order(self, transport: Transport) -> None:
        other = "conf.other"
        await transport.create_group(TOPIC, "g")
        await transport.create_group(other, "g")

        ids = await transport.publish_many(
            [(TOPIC, payload(1)), (other, payload(2)), (TOPIC, payload(3))]
        )

        assert len(ids) == 3
        got = await transport.read_group("g", "c1", [TOPIC, other], count=10, block_ms=None)
        by_topic = {t: [d for d in got if d.topic == t] for t in (TOPIC, other)}
        assert numbers(by_topic[TOPIC]) == [1, 3]
        assert numbers(by_topic[other]) == [2]
        assert [d.entry_id for d in by_topic[TOPIC]] == [ids[0], ids[2]]

    async def test_blocking_read_wakes_on_publish(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        reader = asyncio.create_task(
            transport.read_group("g", "c1", [TOPIC], count=10, block_ms=5000)
        )
        await asyncio.sleep(0.05)  # let the read block first
        started = time.monotonic()
        await transport.publish(TOPIC, payload(7))

        got = await asyncio.wait_for(reader, 3)

        assert numbers(got) == [7]
        assert time.monotonic() - started < 2

    @pytest.mark.parametrize("block_ms", [0, 100])
    async def test_blocking_read_times_out_empty(self, transport: Transport, block_ms: int) -> None:
        await transport.create_group(TOPIC, "g")
        started = time.monotonic()

        got = await transport.read_group("g", "c1", [TOPIC], count=10, block_ms=block_ms)

        assert got == []
        assert time.monotonic() - started < 2

    async def test_raw_entries_without_event_field(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        entry_id = await add_raw(transport, TOPIC, {"x": b"garbage"})

        (got,) = await read(transport, "c1")

        assert got.entry_id == entry_id
        assert got.payload is None
        assert got.fields == {"x": b"garbage"}

    async def test_ack_removes_from_pending(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 3)
        got = await read(transport, "c1")
        assert (await group_info(transport, "g")).pending == 3

        await transport.ack([Ack(TOPIC, "g", got[0].entry_id), Ack(TOPIC, "g", got[2].entry_id)])

        assert (await group_info(transport, "g")).pending == 1
        assert numbers(await read(transport, "c1", pending=True)) == [1]

    async def test_unacked_entries_redelivered_from_own_pending(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 2)
        first = await read(transport, "c1")
        assert [d.delivery_count for d in first] == [1, 1]

        again = await read(transport, "c1", pending=True)
        assert [d.entry_id for d in again] == [d.entry_id for d in first]
        assert [d.delivery_count for d in again] == [2, 2]
        assert again[0].payload == payload(0)

        third = await read(transport, "c1", pending=True, count=1)
        assert [(d.entry_id, d.delivery_count) for d in third] == [(first[0].entry_id, 3)]

        # Nobody else sees them: not another consumer's pending list, not new reads.
        assert await read(transport, "c2", pending=True) == []
        assert await read(transport, "c2") == []
        assert await read(transport, "c1") == []

    async def test_pending_read_is_empty_after_ack(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 1)
        (d,) = await read(transport, "c1")
        await transport.ack([Ack(TOPIC, "g", d.entry_id)])

        assert await read(transport, "c1", pending=True) == []

    async def test_fan_out_every_group_sees_every_entry(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "a")
        await transport.create_group(TOPIC, "b")
        await publish_n(transport, 4)

        a = await read(transport, "c1", group="a")
        b = await read(transport, "c1", group="b")

        assert numbers(a) == numbers(b) == [0, 1, 2, 3]

    async def test_competing_consumers_split_a_group(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 6)

        one = await read(transport, "c1", count=2)
        two = await read(transport, "c2", count=3)
        rest = await read(transport, "c1")

        assert numbers(one) == [0, 1]
        assert numbers(two) == [2, 3, 4]
        assert numbers(rest) == [5]
        assert (await group_info(transport, "g")).consumers == 2

    async def test_create_group_twice_keeps_position(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 2)
        await read(transport, "c1")

        await transport.create_group(TOPIC, "g")

        assert await read(transport, "c1") == []
        assert (await group_info(transport, "g")).pending == 2

    async def test_group_from_start_false_sees_only_new_entries(self, transport: Transport) -> None:
        await publish_n(transport, 2)
        await transport.create_group(TOPIC, "late", from_start=False)
        await transport.create_group(TOPIC, "early", from_start=True)
        await publish_n(transport, 1, start=2)

        assert numbers(await read(transport, "c1", group="late")) == [2]
        assert numbers(await read(transport, "c1", group="early")) == [0, 1, 2]

    async def test_delete_group_and_topic(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 1)

        await transport.delete_group(TOPIC, "g")
        with pytest.raises(GroupNotFound):
            await read(transport, "c1")
        await transport.delete_group(TOPIC, "g")  # idempotent

        await transport.delete_topic(TOPIC)
        assert TOPIC not in {i.topic for i in await transport.admin.topics()}

    async def test_group_not_found(self, transport: Transport) -> None:
        with pytest.raises(GroupNotFound):
            await read(transport, "c1", group="missing")  # no topic at all
        await transport.create_group(TOPIC, "g")
        with pytest.raises(GroupNotFound):
            await read(transport, "c1", group="missing")
        with pytest.raises(GroupNotFound):
            await read(transport, "c1", group="missing", pending=True)
        with pytest.raises(GroupNotFound):
            await transport.claim_idle(TOPIC, "missing", "c1", min_idle_ms=0, count=10)

    async def test_claim_idle_takes_only_idle_entries(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 2)
        stale = await read(transport, "dead")
        await self.age(transport, 0.3)
        await publish_n(transport, 1, start=2)
        fresh = await read(transport, "dead")

        cursor, claimed = await transport.claim_idle(
            TOPIC, "g", "live", min_idle_ms=IDLE_MS, count=10
        )

        assert cursor == "0-0"
        assert [d.entry_id for d in claimed] == [d.entry_id for d in stale]
        assert numbers(claimed) == [0, 1]
        assert [d.delivery_count for d in claimed] == [2, 2]
        # Now they are live's: in its pending list, out of dead's, and not idle any more.
        assert numbers(await read(transport, "live", pending=True)) == [0, 1]
        assert [d.entry_id for d in await read(transport, "dead", pending=True)] == [
            fresh[0].entry_id
        ]
        _, again = await transport.claim_idle(TOPIC, "g", "other", min_idle_ms=IDLE_MS, count=10)
        assert again == []

    async def test_claim_idle_cursor_pages_through(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 3)
        await read(transport, "dead")
        await self.age(transport, 0.3)

        seen: list[int] = []
        cursor = "0-0"
        for _ in range(3):
            cursor, claimed = await transport.claim_idle(
                TOPIC, "g", "live", min_idle_ms=IDLE_MS, count=1, cursor=cursor
            )
            seen += numbers(claimed)
            if cursor == "0-0":
                break
            assert len(claimed) == 1

        assert seen == [0, 1, 2]
        assert cursor == "0-0"

    async def test_claim_counts_deliveries(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 1)
        await read(transport, "a")
        for expected in (2, 3):
            await self.age(transport, 0.3)
            _, claimed = await transport.claim_idle(TOPIC, "g", "b", min_idle_ms=IDLE_MS, count=10)
            assert [d.delivery_count for d in claimed] == [expected]

    async def test_extend_lease_prevents_claim(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 1)
        (d,) = await read(transport, "worker")
        await self.age(transport, 0.3)

        await transport.extend_lease(TOPIC, "g", "worker", [d.entry_id])

        _, claimed = await transport.claim_idle(TOPIC, "g", "thief", min_idle_ms=IDLE_MS, count=10)
        assert claimed == []
        # Extending a lease is not a delivery: the next one is the second.
        (mine,) = await read(transport, "worker", pending=True)
        assert mine.delivery_count == 2

        await self.age(transport, 0.3)
        _, claimed = await transport.claim_idle(TOPIC, "g", "thief", min_idle_ms=IDLE_MS, count=10)
        assert [c.entry_id for c in claimed] == [d.entry_id]

    async def test_dead_letter_moves_and_acks(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 2)
        got = await read(transport, "c1")

        await transport.dead_letter(TOPIC, "g", got[0].entry_id, letter(got[0].entry_id))
        await transport.dead_letter(
            TOPIC, "g", got[1].entry_id, letter(got[1].entry_id, "rejected")
        )

        assert (await group_info(transport, "g")).pending == 0
        assert await read(transport, "c1", pending=True) == []
        letters = await transport.admin.dead_letters(TOPIC)
        assert [(x.origin_id, x.reason) for x in letters] == [
            (got[0].entry_id, "handler failed"),
            (got[1].entry_id, "rejected"),
        ]
        first = letters[0]
        assert (first.topic, first.error, first.agent, first.attempts, first.time) == (
            TOPIC,
            "RuntimeError: boom",
            "worker",
            3,
            1234.5,
        )
        assert first.payload == '{"n": 0}'
        assert [x.origin_id for x in await transport.admin.dead_letters(TOPIC, count=1)] == [
            got[0].entry_id
        ]
        # The original entry stays in the topic; only its delivery is finished.
        assert {i.topic: i for i in await transport.admin.topics()}[TOPIC].dead_letters == 2

    async def test_remove_dead_letters(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 3)
        for d in await read(transport, "c1"):
            await transport.dead_letter(TOPIC, "g", d.entry_id, letter(d.entry_id))
        letters = await transport.admin.dead_letters(TOPIC)

        assert await transport.admin.remove_dead_letters(TOPIC, [letters[1].id]) == 1
        assert [x.id for x in await transport.admin.dead_letters(TOPIC)] == [
            letters[0].id,
            letters[2].id,
        ]
        assert await transport.admin.remove_dead_letters(TOPIC, []) == 0
        assert await transport.admin.remove_dead_letters(TOPIC) == 2
        assert await transport.admin.dead_letters(TOPIC) == []
        assert await transport.admin.remove_dead_letters("conf.nothing") == 0
        assert await transport.admin.dead_letters("conf.nothing") == []

    async def test_read_tail(self, transport: Transport) -> None:
        ids = await publish_n(transport, 3)

        assert numbers(await transport.read_tail(TOPIC, "0-0", count=10, block_ms=None)) == [
            0,
            1,
            2,
        ]
        assert numbers(await transport.read_tail(TOPIC, ids[0], count=1, block_ms=None)) == [1]
        assert await transport.read_tail(TOPIC, ids[2], count=10, block_ms=None) == []
        assert await transport.read_tail("conf.nothing", "0-0", count=10, block_ms=100) == []

        waiter = asyncio.create_task(transport.read_tail(TOPIC, ids[2], count=10, block_ms=5000))
        await asyncio.sleep(0.05)
        await publish_n(transport, 1, start=3)
        assert numbers(await asyncio.wait_for(waiter, 3)) == [3]

    async def test_topics_reports_groups_pending_lag_and_dead_letters(
        self, transport: Transport
    ) -> None:
        await transport.create_group(TOPIC, "busy")
        await transport.create_group(TOPIC, "idle")
        await publish_n(transport, 4)
        got = await read(transport, "c1", group="busy", count=3)
        await read(transport, "c2", group="busy", count=1)
        await transport.ack([Ack(TOPIC, "busy", got[0].entry_id)])
        await transport.dead_letter(TOPIC, "busy", got[1].entry_id, letter(got[1].entry_id))
        await publish_n(transport, 1, topic="conf.empty")

        infos = {i.topic: i for i in await transport.admin.topics()}

        assert {TOPIC, "conf.empty"} <= set(infos)
        info = infos[TOPIC]
        assert info.length == 4
        assert info.dead_letters == 1
        groups = {g.name: g for g in info.groups}
        assert set(groups) == {"busy", "idle"}
        assert (groups["busy"].consumers, groups["busy"].pending, groups["busy"].lag) == (2, 2, 0)
        assert (groups["idle"].consumers, groups["idle"].pending, groups["idle"].lag) == (0, 0, 4)
        empty = infos["conf.empty"]
        assert (empty.length, empty.groups, empty.dead_letters) == (1, [], 0)
        assert info.to_dict()["groups"][0]["name"] in {"busy", "idle"}

    async def test_cancelled_blocking_read_leaves_transport_usable(
        self, transport: Transport
    ) -> None:
        await transport.create_group(TOPIC, "g")
        reader = asyncio.create_task(
            transport.read_group("g", "c1", [TOPIC], count=10, block_ms=5000)
        )
        tail = asyncio.create_task(transport.read_tail(TOPIC, "0-0", count=10, block_ms=5000))
        await asyncio.sleep(0.1)  # both are blocked now
        started = time.monotonic()
        reader.cancel()
        tail.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        with pytest.raises(asyncio.CancelledError):
            await tail
        assert time.monotonic() - started < 1

        await publish_n(transport, 1)
        assert numbers(await read(transport, "c1")) == [0]
        follow = asyncio.create_task(
            transport.read_group("g", "c1", [TOPIC], count=10, block_ms=5000)
        )
        await asyncio.sleep(0.05)
        await publish_n(transport, 1, start=1)
        assert numbers(await asyncio.wait_for(follow, 3)) == [1]

    async def test_closed_transport_raises(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await transport.aclose()
        await transport.aclose()  # idempotent

        calls = [
            transport.publish(TOPIC, payload(0)),
            transport.publish_many([(TOPIC, payload(0))]),
            transport.create_group(TOPIC, "h"),
            read(transport, "c1"),
            read(transport, "c1", pending=True),
            transport.ack([Ack(TOPIC, "g", "1-0")]),
            transport.claim_idle(TOPIC, "g", "c1", min_idle_ms=0, count=1),
            transport.read_tail(TOPIC, "0-0", count=1, block_ms=None),
            transport.admin.topics(),
            transport.admin.dead_letters(TOPIC),
            transport.is_marked("x"),
            transport.store.write_journal([entry("r", "step")]),
            transport.store.read_journal("r"),
            transport.store.list_runs(),
            transport.store.get_run("r"),
            transport.store.save_run(RunInfo("r", "n")),
        ]
        for call in calls:
            with pytest.raises(TransportClosed):
                await call

    async def test_close_wakes_blocked_reader(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        reader = asyncio.create_task(
            transport.read_group("g", "c1", [TOPIC], count=10, block_ms=2000)
        )
        await asyncio.sleep(0.05)

        await transport.aclose()

        # A reader blocked across close ends promptly, saying the transport was closed.
        with pytest.raises(TransportClosed):
            await asyncio.wait_for(reader, 3)

    async def test_a_topic_without_groups_has_no_state(self, transport: Transport) -> None:
        assert await transport.entry_state("es.none", "1-0") == []
        entry = await transport.publish("es.lonely", b"{}")
        assert await transport.entry_state("es.lonely", entry) == []

    async def test_queued_pending_and_acked(self, transport: Transport) -> None:
        await transport.create_group("es.t", "a")
        await transport.create_group("es.t", "b")
        entry = await transport.publish("es.t", b"{}")
        assert await transport.entry_state("es.t", entry) == [
            EntryState("a", delivered=False),
            EntryState("b", delivered=False),
        ]

        [got] = await transport.read_group("a", "c1", ["es.t"], count=1, block_ms=None)
        assert got.entry_id == entry
        await self.age(transport, 0.2)
        a, b = await transport.entry_state("es.t", entry)
        assert (a.group, a.delivered, a.consumer, a.deliveries) == ("a", True, "c1", 1)
        assert 200 <= a.idle_ms < 5200
        assert b == EntryState("b", delivered=False)

        await transport.ack([Ack("es.t", "a", entry)])
        later = await transport.publish("es.t", b"{}")
        assert (await transport.entry_state("es.t", entry))[0] == EntryState("a", delivered=True)
        # An entry the group has not reached yet is not "delivered", even after others were.
        assert (await transport.entry_state("es.t", later))[0] == EntryState("a", delivered=False)
