"""``Transport.entry_state``: where one entry stands in each group, on every transport."""

from __future__ import annotations

from agentbus import FakeClock
from agentbus.transports import Ack, EntryState, MemoryTransport, Transport


async def test_a_topic_without_groups_has_no_state(transport: Transport) -> None:
    assert await transport.entry_state("es.none", "1-0") == []
    entry = await transport.publish("es.lonely", b"{}")
    assert await transport.entry_state("es.lonely", entry) == []


async def test_queued_pending_and_acked(transport: Transport, clock: FakeClock) -> None:
    await transport.create_group("es.t", "a")
    await transport.create_group("es.t", "b")
    entry = await transport.publish("es.t", b"{}")
    assert await transport.entry_state("es.t", entry) == [
        EntryState("a", delivered=False),
        EntryState("b", delivered=False),
    ]

    [got] = await transport.read_group("a", "c1", ["es.t"], count=1, block_ms=None)
    assert got.entry_id == entry
    if isinstance(transport, MemoryTransport):
        clock.advance(1.5)
    a, b = await transport.entry_state("es.t", entry)
    assert (a.group, a.delivered, a.consumer, a.deliveries) == ("a", True, "c1", 1)
    if isinstance(transport, MemoryTransport):
        assert a.idle_ms == 1500
    else:
        assert 0 <= a.idle_ms < 5000
    assert b == EntryState("b", delivered=False)

    await transport.ack([Ack("es.t", "a", entry)])
    later = await transport.publish("es.t", b"{}")
    assert (await transport.entry_state("es.t", entry))[0] == EntryState("a", delivered=True)
    # An entry the group has not reached yet is not "delivered", even after others were.
    assert (await transport.entry_state("es.t", later))[0] == EntryState("a", delivered=False)
