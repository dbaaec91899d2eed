"""Conformance checks of the partition primitives of the :class:`~agentbus.transports.Broker`
role: declared counts, members with expiry, and leases (see :mod:`agentbus.partitions`)."""

from __future__ import annotations

from ...transports import Transport
from ._base import ConformanceBase

__all__ = ["PartitionChecks"]

TOPIC = "conf.parts"
TTL_MS = 150


class PartitionChecks(ConformanceBase):
    """Counts are declared once; members and leases expire; leases have one holder."""

    async def test_the_first_declaration_of_a_count_stands(self, transport: Transport) -> None:
        assert await transport.partition_count(TOPIC) is None

        assert await transport.declare_partitions(TOPIC, 8) == 8
        assert await transport.declare_partitions(TOPIC, 8) == 8
        assert await transport.declare_partitions(TOPIC, 4) == 8  # the caller refuses it

        assert await transport.partition_count(TOPIC) == 8
        assert await transport.partition_count("conf.other") is None

    async def test_members_are_listed_until_their_time_runs_out_or_they_leave(
        self, transport: Transport
    ) -> None:
        assert await transport.heartbeat_member(TOPIC, "g", "b", ttl_ms=TTL_MS) == ["b"]
        assert await transport.heartbeat_member(TOPIC, "g", "a", ttl_ms=TTL_MS * 20) == ["a", "b"]
        assert await transport.heartbeat_member(TOPIC, "other", "c", ttl_ms=TTL_MS) == ["c"]

        await self.age(transport, TTL_MS / 1000 * 2)

        # b did not beat again: gone. a's time has not run out.
        assert await transport.heartbeat_member(TOPIC, "g", "a", ttl_ms=TTL_MS * 20) == ["a"]
        await transport.remove_member(TOPIC, "g", "a")
        await transport.remove_member(TOPIC, "g", "nobody")
        assert await transport.heartbeat_member(TOPIC, "g", "d", ttl_ms=TTL_MS) == ["d"]

    async def test_a_lease_has_one_holder_who_renews_and_releases_it(
        self, transport: Transport
    ) -> None:
        p0, p1 = f"{TOPIC}#0", f"{TOPIC}#1"
        long = TTL_MS * 20

        assert await transport.acquire_leases("g", "a", [p0, p1], ttl_ms=long) == [True, True]
        assert await transport.acquire_leases("g", "b", [p0, p1], ttl_ms=long) == [False, False]
        assert await transport.acquire_leases("other", "b", [p0], ttl_ms=long) == [True]
        assert await transport.acquire_leases("g", "a", [p1], ttl_ms=long) == [True]  # renewed

        assert not await transport.release_lease(p0, "g", "b")  # not b's: kept
        assert await transport.acquire_leases("g", "b", [p0], ttl_ms=long) == [False]
        assert await transport.release_lease(p0, "g", "a")
        assert not await transport.release_lease(p0, "g", "a")  # already gone

        assert await transport.acquire_leases("g", "b", [p0, p1], ttl_ms=long) == [True, False]

    async def test_a_lease_not_renewed_in_time_passes_to_another(
        self, transport: Transport
    ) -> None:
        stream = f"{TOPIC}#3"
        assert await transport.acquire_leases("g", "a", [stream], ttl_ms=TTL_MS) == [True]

        await self.age(transport, TTL_MS / 1000 * 2)

        assert await transport.acquire_leases("g", "b", [stream], ttl_ms=TTL_MS * 20) == [True]
        assert not await transport.release_lease(stream, "g", "a")  # a lost it
        assert await transport.acquire_leases("g", "a", [stream], ttl_ms=TTL_MS) == [False]
