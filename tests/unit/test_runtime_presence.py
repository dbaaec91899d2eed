"""A runtime announces what it owns, keeps announcing it, withdraws on a clean stop,
and announces itself again after being pruned while it was paused (memory transport)."""

from __future__ import annotations

import pytest

from agentbus import (
    Agent,
    Context,
    FakeClock,
    MemoryTransport,
    Message,
    Retention,
    Runtime,
    UsageError,
    handle,
)
from agentbus.testing import wait_for


class Note(Message, type="pres.Note"):
    text: str


class Echo(Agent, name="echo"):
    @handle("pres.echo")
    async def echo(self, note: Note, ctx: Context) -> Note:
        return note


class Watcher(Agent, name="watcher"):
    @handle("pres.notes", mode="broadcast")
    async def watch(self, note: Note, ctx: Context) -> None:
        return None


async def groups(t: MemoryTransport) -> list[str]:
    return [g.name for i in await t.admin.topics() if i.topic == "pres.notes" for g in i.groups]


async def test_a_runtime_announces_its_broadcast_groups_and_inbox() -> None:
    clock = FakeClock()
    t = MemoryTransport(clock=clock)
    retention = Retention(interval=None, heartbeat=0.05, dead_consumers=1.0)
    rt = Runtime(transport=t, consumer="me", block_ms=50, retention=retention)
    rt.add(Watcher(), Echo())
    await rt.start()
    assert await rt.request("pres.echo", Note(text="hi"), expect=Note, timeout=5) == Note(text="hi")

    async def announced_with_inbox() -> bool:
        clock.advance(10)  # no beat can run before the listing below
        dead = await t.admin.prune_dead_consumers(idle_ms=1000, dry_run=True)
        return [(d.consumer, d.groups, d.inbox) for d in dead] == [
            ("me", [("pres.notes", "watcher:me")], "_inbox.me")
        ]

    await wait_for(announced_with_inbox, message="the runtime's announcement")

    async def fresh() -> bool:  # the heartbeat refreshes it
        return await t.admin.prune_dead_consumers(idle_ms=1000, dry_run=True) == []

    await wait_for(fresh, message="a heartbeat")

    # Pruned while "paused": its group goes; its reads re-create it and it re-announces.
    clock.advance(10)
    assert [d.consumer for d in await t.admin.prune_dead_consumers(idle_ms=1000)] == ["me"]
    assert await groups(t) == []

    async def recreated() -> bool:
        return await groups(t) == ["watcher:me"]

    await wait_for(recreated, message="the group re-created")
    await wait_for(fresh, message="re-announced")
    clock.advance(10)
    assert [d.consumer for d in await t.admin.prune_dead_consumers(idle_ms=1000, dry_run=True)] == [
        "me"
    ]

    await rt.aclose()
    # A clean stop removed its group and inbox itself, and withdrew: nothing to prune.
    clock.advance(10)
    assert await t.admin.prune_dead_consumers(idle_ms=1000, dry_run=True) == []
    await t.aclose()


async def test_a_runtime_that_owns_nothing_announces_nothing() -> None:
    clock = FakeClock()
    t = MemoryTransport(clock=clock)
    rt = Runtime(transport=t, retention=Retention(interval=None, heartbeat=0.01, dead_consumers=1))
    rt.add(Echo())  # a shared group only: nothing another process must clean up
    async with rt:
        await rt.maintenance.run_once()
        clock.advance(10)
        assert await t.admin.prune_dead_consumers(idle_ms=1, dry_run=True) == []
    await t.aclose()


def test_dead_consumers_must_allow_three_heartbeats() -> None:
    with pytest.raises(UsageError, match=r"at least three heartbeats \(15s with heartbeat=5.0\)"):
        Retention(dead_consumers=10)
    with pytest.raises(UsageError, match=r"Retention.heartbeat must be positive"):
        Retention(heartbeat=0)
    assert Retention(dead_consumers=None).dead_consumers is None
