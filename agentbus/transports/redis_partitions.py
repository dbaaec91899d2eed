"""Partitions on Redis: declared counts, members with expiry, leases.

Mixed into :class:`~agentbus.transports.redis.RedisStreamsTransport` (the broker); it
runs its commands through the shared
:class:`~agentbus.transports.redis_client.RedisClient` (no redis-py import here).

Every call touches one key, so one hash slot: the count ``partitions:{T}`` and the
members hash ``members:{T}:G`` share the topic's slot; a partition's lease
``lease:{T#k}:G`` is in that partition stream's slot, so taking over a partition and
reading it go to the same master. Expiries use Redis's clock (``TIME`` in a script, a
``PX`` expiry), so the hosts' clocks do not matter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import text as _s

if TYPE_CHECKING:
    from ..keys import Keys
    from .redis_client import RedisClient

__all__ = ["RedisPartitions"]

# KEYS[1]: the members hash. ARGV: member, ttl ms. Members map to their expiry (ms).
HEARTBEAT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', now + ttl))
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    live[#live + 1] = all[i]
  end
end
redis.call('PEXPIRE', KEYS[1], 3 * ttl)
return live
"""

# KEYS[1]: a lease. ARGV: member, ttl ms. Take it if free, extend it if ours.
ACQUIRE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1]: a lease. ARGV[1]: member. Compare and delete.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisPartitions:
    """The partition primitives of the Redis broker (needs ``_c`` and ``keys``)."""

    _c: RedisClient
    keys: Keys

    async def declare_partitions(self, topic: str, count: int) -> int:
        key = self.keys.partitions(topic)

        async def run() -> int:
            r: Any = self._c.r
            if await r.set(key, count, nx=True):
                return count
            return int(await r.get(key))

        return await self._c.idempotent(run)

    async def partition_count(self, topic: str) -> int | None:
        key = self.keys.partitions(topic)
        # One try: this is on the publish path, whose caller decides about retries (a
        # handler waits out an outage and publishes again; three tries here made each of
        # its re-runs 0.25 s slower).
        value = await self._c.call(lambda: self._c.r.get(key))
        return None if value is None else int(value)

    async def heartbeat_member(
        self, topic: str, group: str, member: str, *, ttl_ms: int
    ) -> list[str]:
        key = self.keys.members(topic, group)
        live = await self._c.idempotent(
            lambda: self._c.r.eval(HEARTBEAT_SCRIPT, 1, key, member, int(ttl_ms))
        )
        return sorted(_s(m) for m in live)

    async def remove_member(self, topic: str, group: str, member: str) -> None:
        key = self.keys.members(topic, group)
        await self._c.idempotent(lambda: self._c.r.hdel(key, member))

    async def acquire_leases(
        self, group: str, member: str, streams: Sequence[str], *, ttl_ms: int
    ) -> list[bool]:
        # One call per lease (each its own slot), sent together.
        async def one(stream: str) -> bool:
            key = self.keys.lease(stream, group)
            return bool(
                await self._c.idempotent(
                    lambda: self._c.r.eval(ACQUIRE_SCRIPT, 1, key, member, int(ttl_ms))
                )
            )

        return list(await asyncio.gather(*(one(s) for s in streams)))

    async def release_lease(self, stream: str, group: str, member: str) -> bool:
        key = self.keys.lease(stream, group)
        return bool(
            await self._c.idempotent(lambda: self._c.r.eval(RELEASE_SCRIPT, 1, key, member))
        )
