"""Conformance checks of presence, the part of the :class:`~agentbus.transports.Admin`
role that lets runtimes announce what they own.

A runtime announces its broadcast groups and reply inbox; once it stops announcing
itself they are deleted (and the topic can be trimmed again), never a live one's.
"""

from __future__ import annotations

import json

from ...transports import Ack, Transport
from ._base import ConformanceBase

__all__ = ["PresenceChecks"]

TOPIC = "pres.news"
IDLE_MS = 150


async def groups_of(t: Transport, topic: str = TOPIC) -> list[str]:
    for info in await t.admin.topics():
        if info.topic == topic:
            return [g.name for g in info.groups]
    return []


async def topic_names(t: Transport) -> set[str]:
    return {info.topic for info in await t.admin.topics()}


async def set_up(t: Transport) -> None:
    """Two runtimes, each with a broadcast group on TOPIC and a reply inbox; a shared group."""
    for name in ("dead", "live"):
        await t.create_group(TOPIC, f"listener:{name}", from_start=False)
        await t.publish(f"_inbox.{name}", b'{"reply": 1}')
        await t.admin.announce(
            name, groups=[(TOPIC, f"listener:{name}")], inbox=f"_inbox.{name}", every_ms=10
        )
    await t.create_group(TOPIC, "shared")  # nobody announces it: never pruned


class PresenceChecks(ConformanceBase):
    """Announcing, heartbeats, withdrawing, and pruning what dead runtimes owned."""

    async def test_dead_runtimes_lose_their_groups_and_inbox_live_ones_keep_theirs(
        self, transport: Transport
    ) -> None:
        await set_up(transport)
        for n in range(3):
            await transport.publish(TOPIC, json.dumps({"n": n}).encode())
        # The live runtime and the shared group handle everything; the dead one never will.
        for group in ("listener:live", "shared"):
            got = await transport.read_group(group, "c", [TOPIC], count=10, block_ms=None)
            await transport.ack([Ack(TOPIC, group, d.entry_id) for d in got])
        assert await transport.admin.trim_acknowledged(TOPIC) == 0  # held back by the dead group
        await self.age(transport, IDLE_MS / 1000 * 2)
        assert await transport.admin.heartbeat("live")

        listed = await transport.admin.prune_dead_consumers(idle_ms=IDLE_MS, dry_run=True)

        assert [(d.consumer, d.groups, d.inbox) for d in listed] == [
            ("dead", [(TOPIC, "listener:dead")], "_inbox.dead")
        ]
        assert listed[0].idle >= IDLE_MS / 1000
        assert "listener:dead" in await groups_of(transport)  # a dry run deletes nothing

        pruned = await transport.admin.prune_dead_consumers(idle_ms=IDLE_MS)

        assert [d.consumer for d in pruned] == ["dead"]
        assert await groups_of(transport) == ["listener:live", "shared"]
        names = await topic_names(transport)
        assert "_inbox.dead" not in names
        assert "_inbox.live" in names
        assert await transport.admin.trim_acknowledged(TOPIC) == 3  # nothing holds it back now
        assert await transport.admin.prune_dead_consumers(idle_ms=IDLE_MS) == []
        # A runtime pruned while it was only paused finds out and announces itself again.
        assert not await transport.admin.heartbeat("dead")

    async def test_a_runtime_is_dead_only_after_three_of_its_own_periods(
        self, transport: Transport
    ) -> None:
        await transport.create_group(TOPIC, "listener:slow", from_start=False)
        await transport.admin.announce(
            "slow", groups=[(TOPIC, "listener:slow")], inbox=None, every_ms=IDLE_MS
        )
        await self.age(transport, IDLE_MS / 1000 * 2)

        # Asked for a shorter threshold than its announced period allows: kept.
        assert await transport.admin.prune_dead_consumers(idle_ms=1) == []
        await self.age(transport, IDLE_MS / 1000 * 2)  # now four periods
        dead = await transport.admin.prune_dead_consumers(idle_ms=1)
        assert [d.consumer for d in dead] == ["slow"]
        assert await groups_of(transport) == []

    async def test_a_withdrawn_runtime_is_forgotten(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "listener:gone", from_start=False)
        await transport.admin.announce(
            "gone", groups=[(TOPIC, "listener:gone")], inbox=None, every_ms=1
        )
        await transport.admin.withdraw("gone")
        await self.age(transport, IDLE_MS / 1000 * 2)

        assert await transport.admin.prune_dead_consumers(idle_ms=IDLE_MS) == []
        assert not await transport.admin.heartbeat("gone")

    async def test_announcing_again_replaces_what_a_runtime_owns(
        self, transport: Transport
    ) -> None:
        await set_up(transport)
        # "dead" now owns only its inbox: its former group is someone else's business.
        await transport.admin.announce("dead", groups=[], inbox="_inbox.dead", every_ms=10)
        await self.age(transport, IDLE_MS / 1000 * 2)
        await transport.admin.heartbeat("live")

        (pruned,) = await transport.admin.prune_dead_consumers(idle_ms=IDLE_MS)

        assert (pruned.consumer, pruned.groups, pruned.inbox) == ("dead", [], "_inbox.dead")
        assert await groups_of(transport) == ["listener:dead", "listener:live", "shared"]
        assert "_inbox.dead" not in await topic_names(transport)
