"""Presence on Redis: runtimes announce themselves; what dead ones owned is pruned.

:class:`RedisPresence` is the part of the Redis transport's ``admin``
(:class:`~agentbus.transports.redis_admin.RedisAdmin`) that keeps presence records; it
runs its commands through the shared
:class:`~agentbus.transports.redis_client.RedisClient` (no redis-py import here).

Each runtime keeps one hash, ``presence:<consumer>``: when it was last seen (Redis's own
clock, so hosts' clocks do not matter), how often it says so, its broadcast groups and
its reply inbox. A heartbeat writes that hash only, so there is no key every runtime
writes every few seconds; the set ``presences`` that lists the runtimes changes only
when one starts, stops or is pruned.

Why scripts: the decision that a runtime is dead and the deletion of its groups must be
one step, or a heartbeat (or a re-announcement after a long pause) could land in between
and the live runtime would lose its groups.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import DeadConsumer
from .base import text as _s

if TYPE_CHECKING:
    from .redis_client import RedisClient

__all__ = ["RedisPresence"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: the runtime's hash, the index set. ARGV: consumer, every ms, groups (JSON), inbox.
ANNOUNCE_SCRIPT = f"""{_NOW}
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'seen', string.format('%.0f', now), 'every', ARGV[2],
  'groups', ARGV[3], 'inbox', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS[1]: the runtime's hash. Refreshes 'seen'; 0 when the hash is gone (pruned).
HEARTBEAT_SCRIPT = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
{_NOW}
redis.call('HSET', KEYS[1], 'seen', string.format('%.0f', now))
return 1
"""

# KEYS: the runtime's hash, the index set, its inbox stream, then one topic stream per
# group. ARGV: consumer, idle ms, the groups and inbox as listed (JSON, string), then one
# group name per topic. Deletes only if the runtime is still dead and still owns exactly
# what was listed (else the next pass looks again). A gone hash drops the index entry.
PRUNE_SCRIPT = f"""
local rec = redis.call('HMGET', KEYS[1], 'seen', 'every', 'groups', 'inbox')
if not rec[1] then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 0
end
{_NOW}
local limit = math.max(tonumber(ARGV[2]), 3 * tonumber(rec[2] or '0'))
if now - tonumber(rec[1]) <= limit then return 0 end
if rec[3] ~= ARGV[3] or (rec[4] or '') ~= ARGV[4] then return 0 end
for i = 4, #KEYS do
  redis.pcall('XGROUP', 'DESTROY', KEYS[i], ARGV[i + 1])
end
if ARGV[4] ~= '' then redis.call('DEL', KEYS[3]) end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

_PAGE = 500


class RedisPresence:
    """Runtime presence and pruning of dead runtimes' groups and inboxes on Redis."""

    def __init__(self, client: RedisClient) -> None:
        self._c = client
        self.keys = client.keys

    @property
    def _r(self) -> Any:
        return self._c.r

    async def announce(
        self,
        consumer: str,
        *,
        groups: Sequence[tuple[str, str]],
        inbox: str | None,
        every_ms: int,
    ) -> None:
        owned = json.dumps(sorted([t, g] for t, g in groups))
        keys = (self.keys.presence(consumer), self.keys.presences())
        await self._c.idempotent(
            lambda: self._r.eval(
                ANNOUNCE_SCRIPT, 2, *keys, consumer, int(every_ms), owned, inbox or ""
            )
        )

    async def heartbeat(self, consumer: str) -> bool:
        key = self.keys.presence(consumer)
        return bool(await self._c.idempotent(lambda: self._r.eval(HEARTBEAT_SCRIPT, 1, key)))

    async def withdraw(self, consumer: str) -> None:
        async def run() -> None:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.presence(consumer))
                pipe.srem(self.keys.presences(), consumer)
                await pipe.execute()

        await self._c.idempotent(run)

    async def prune_dead_consumers(
        self, *, idle_ms: int, dry_run: bool = False
    ) -> list[DeadConsumer]:
        records = await self._c.idempotent(self._presence_records)
        now_ms, rows = records
        dead: list[tuple[DeadConsumer, str, str]] = []
        gone: list[str] = []  # in the index without a hash: dropped by the script
        for consumer, row in rows:
            seen, every, owned, inbox = row
            if seen is None:
                gone.append(consumer)
                continue
            idle = now_ms - int(seen)
            if idle <= max(idle_ms, 3 * int(every or 0)):
                continue
            owned_text, inbox_text = _s(owned or b"[]"), _s(inbox or b"")
            groups = [(str(t), str(g)) for t, g in json.loads(owned_text)]
            record = DeadConsumer(consumer, idle / 1000, groups, inbox_text or None)
            dead.append((record, owned_text, inbox_text))
        dead.sort(key=lambda d: -d[0].idle)
        if dry_run:
            return [d for d, _, _ in dead]
        pruned = []
        for d, owned_text, inbox_text in dead:
            if await self._prune_one(d.consumer, idle_ms, d.groups, owned_text, inbox_text):
                pruned.append(d)
        for consumer in gone:
            await self._prune_one(consumer, idle_ms, [], "[]", "")
        return pruned

    async def _presence_records(self) -> tuple[int, list[tuple[str, list[Any]]]]:
        members: list[str] = []
        cursor = 0
        while True:
            cursor, page = await self._r.sscan(self.keys.presences(), cursor, count=_PAGE)
            members.extend(_s(m) for m in page)
            if int(cursor) == 0:
                break
        members = sorted(set(members))
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.time()
            for consumer in members:
                pipe.hmget(self.keys.presence(consumer), "seen", "every", "groups", "inbox")
            replies = await pipe.execute()
        seconds, micros = replies[0]
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return now_ms, list(zip(members, replies[1:], strict=True))

    async def _prune_one(
        self,
        consumer: str,
        idle_ms: int,
        groups: Sequence[tuple[str, str]],
        owned_text: str,
        inbox_text: str,
    ) -> bool:
        keys = [
            self.keys.presence(consumer),
            self.keys.presences(),
            self.keys.topic(inbox_text or f"_inbox.{consumer}"),
            *(self.keys.topic(t) for t, _ in groups),
        ]
        args = [consumer, int(idle_ms), owned_text, inbox_text, *(g for _, g in groups)]
        hit = await self._c.idempotent(lambda: self._r.eval(PRUNE_SCRIPT, len(keys), *keys, *args))
        return bool(hit)
