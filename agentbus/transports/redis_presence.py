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

Why scripts: the decision that a runtime is dead must be taken on the record it acts
on, or a heartbeat (or a re-announcement after a long pause) could land in between and
a live runtime would lose its groups. What it owns lives in other hash slots (its topics,
its inbox), so on a cluster the deletion cannot be part of that script: the script marks
the record as being pruned, which makes the runtime's next heartbeat fail as if it were
gone; then its groups and inbox go, then the record (see ``MARK_SCRIPT``). A heartbeat
before the mark keeps everything; one after it finds the runtime pruned, as a heartbeat
just after a single-step prune would, and the runtime announces itself again (its reads
re-create its groups).
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

# KEYS[1]: the runtime's hash. Refreshes 'seen'; 0 when the hash is gone (pruned) or
# marked as being pruned: the runtime announces itself again either way.
HEARTBEAT_SCRIPT = f"""
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'pruning') == 1 then
  return 0
end
{_NOW}
redis.call('HSET', KEYS[1], 'seen', string.format('%.0f', now))
return 1
"""

# Pruning a dead runtime touches its presence keys (slot {presence}), its inbox and the
# topics of its groups (a slot each): one script cannot do it on a cluster. So it goes in
# steps, each idempotent, the decision first:
#   1. MARK_SCRIPT (presence slot) decides the runtime is dead and marks its record
#      ('pruning'); from then on its heartbeats fail, so a runtime that was only slow
#      announces itself again (a new record, without the mark);
#   2. each group is destroyed (one key each) and the inbox deleted;
#   3. FINISH_SCRIPT (presence slot) deletes the record if it still carries the mark.
# A crash in between leaves a marked record: the next pass finishes it without looking
# at its liveness again (the decision was taken).
#
# KEYS: the runtime's hash, the index set. ARGV: consumer, idle ms, the groups and inbox
# as listed (JSON, string). Returns 1 when the record is (now, or already) marked and
# owns exactly what was listed, else 0 (alive, or changed since listed: the next pass
# looks again). A gone hash drops the index entry.
MARK_SCRIPT = f"""
local rec = redis.call('HMGET', KEYS[1], 'seen', 'every', 'groups', 'inbox', 'pruning')
if not rec[1] then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 0
end
if rec[3] ~= ARGV[3] or (rec[4] or '') ~= ARGV[4] then return 0 end
if rec[5] then return 1 end
{_NOW}
local limit = math.max(tonumber(ARGV[2]), 3 * tonumber(rec[2] or '0'))
if now - tonumber(rec[1]) <= limit then return 0 end
redis.call('HSET', KEYS[1], 'pruning', '1')
return 1
"""

# KEYS[1]: a topic stream. ARGV[1]: a group. Destroys the group; a missing stream or
# group is no error (done before, or never created).
DESTROY_GROUP_SCRIPT = """
redis.pcall('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
return 1
"""

# KEYS: the runtime's hash, the index set. ARGV[1]: consumer. Deletes a record still
# marked (1); one announced again meanwhile (no mark) is the live runtime's: kept (0).
FINISH_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], 'pruning') == 1 then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
return 0
"""

# KEYS[1]: the index set (for the slot only: the clock of the node that runs the scripts).
NOW_SCRIPT = f"""{_NOW}
return now
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
        now_ms, rows = await self._c.idempotent(self._presence_records)
        dead: list[tuple[DeadConsumer, str, str]] = []
        gone: list[str] = []  # in the index without a hash: dropped by the script
        for consumer, row in rows:
            seen, every, owned, inbox, pruning = row
            if seen is None:
                gone.append(consumer)
                continue
            idle = now_ms - int(seen)
            # A marked record is being pruned (a pass stopped half way): finished as is.
            if pruning is None and idle <= max(idle_ms, 3 * int(every or 0)):
                continue
            owned_text, inbox_text = _s(owned or b"[]"), _s(inbox or b"")
            groups = [(str(t), str(g)) for t, g in json.loads(owned_text)]
            record = DeadConsumer(consumer, max(idle, 0) / 1000, groups, inbox_text or None)
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
        fields = ("seen", "every", "groups", "inbox", "pruning")
        # All in the presence slot: one node, and its clock is the one the scripts use.
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.eval(NOW_SCRIPT, 1, self.keys.presences())
            for consumer in members:
                pipe.hmget(self.keys.presence(consumer), *fields)
            replies = await pipe.execute()
        return int(replies[0]), list(zip(members, replies[1:], strict=True))

    async def _prune_one(
        self,
        consumer: str,
        idle_ms: int,
        groups: Sequence[tuple[str, str]],
        owned_text: str,
        inbox_text: str,
    ) -> bool:
        """Prune one runtime in the steps described at MARK_SCRIPT; whether this call
        deleted its record."""
        record = (self.keys.presence(consumer), self.keys.presences())
        marked = await self._c.idempotent(
            lambda: self._r.eval(
                MARK_SCRIPT, 2, *record, consumer, int(idle_ms), owned_text, inbox_text
            )
        )
        if not marked:
            return False

        async def remove() -> None:
            # Single-key commands, one pipeline: on a cluster each node gets its part.
            async with self._r.pipeline(transaction=False) as pipe:
                for topic, group in groups:
                    pipe.eval(DESTROY_GROUP_SCRIPT, 1, self.keys.topic(topic), group)
                if inbox_text:
                    pipe.delete(self.keys.topic(inbox_text))
                await pipe.execute()

        await self._c.idempotent(remove)
        finished = await self._c.idempotent(
            lambda: self._r.eval(FINISH_SCRIPT, 2, *record, consumer)
        )
        return bool(finished)
