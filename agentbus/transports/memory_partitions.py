"""Partitions in memory: declared counts, members with expiry, leases.

The part of :class:`~agentbus.transports.memory.MemoryTransport`'s broker that
:mod:`agentbus.partitions` uses, with the semantics of
:mod:`agentbus.transports.redis_partitions`: expiries run on the transport's clock
(a test moves a :class:`~agentbus.clock.FakeClock` to make a member or lease expire).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..clock import Clock

__all__ = ["MemoryPartitions", "PartitionState"]


@dataclass
class PartitionState:
    """Counts by topic, members by (topic, group), leases by (stream, group)."""

    counts: dict[str, int] = field(default_factory=dict)
    #: (topic, group) -> member -> expiry (clock ms).
    members: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    #: (stream, group) -> (member, expiry in clock ms).
    leases: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)

    def clear(self) -> int:
        n = len(self.counts) + len(self.members) + len(self.leases)
        self.counts.clear()
        self.members.clear()
        self.leases.clear()
        return n


class MemoryPartitions:
    """Mixed into the memory transport, which provides ``_check``, ``clock`` and
    ``_parts`` (a :class:`PartitionState`)."""

    clock: Clock
    _parts: PartitionState
    _check: Callable[[], None]

    async def declare_partitions(self, topic: str, count: int) -> int:
        self._check()
        return self._parts.counts.setdefault(topic, count)

    async def partition_count(self, topic: str) -> int | None:
        self._check()
        return self._parts.counts.get(topic)

    async def heartbeat_member(
        self, topic: str, group: str, member: str, *, ttl_ms: int
    ) -> list[str]:
        self._check()
        now = self.clock.now_ms()
        members = self._parts.members.setdefault((topic, group), {})
        members[member] = now + ttl_ms
        for name, expiry in list(members.items()):
            if expiry <= now:
                del members[name]
        return sorted(members)

    async def remove_member(self, topic: str, group: str, member: str) -> None:
        self._check()
        members = self._parts.members.get((topic, group))
        if members is not None:
            members.pop(member, None)

    async def acquire_leases(
        self, group: str, member: str, streams: Sequence[str], *, ttl_ms: int
    ) -> list[bool]:
        self._check()
        now = self.clock.now_ms()
        out = []
        for stream in streams:
            held = self._parts.leases.get((stream, group))
            if held is None or held[1] <= now or held[0] == member:
                self._parts.leases[(stream, group)] = (member, now + ttl_ms)
                out.append(True)
            else:
                out.append(False)
        return out

    async def release_lease(self, stream: str, group: str, member: str) -> bool:
        self._check()
        held = self._parts.leases.get((stream, group))
        if held is None or held[0] != member or held[1] <= self.clock.now_ms():
            return False
        del self._parts.leases[(stream, group)]
        return True
