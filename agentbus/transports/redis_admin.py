"""The operator side of the Redis transport: topics, dead letters, retention, presence,
deletion.

What ``agentbus topics``, ``agentbus dlq``, ``agentbus prune`` and the runtime's
retention step use, kept apart from the delivery path in
:mod:`agentbus.transports.redis`. :class:`RedisAdmin` is the transport's ``admin``; it
runs its commands through the shared
:class:`~agentbus.transports.redis_client.RedisClient`, and presence through
:class:`~agentbus.transports.redis_presence.RedisPresence`. Nothing here imports
redis-py.

Why scripts: deciding what may go and removing it must be one step. Between reading a
group's state and an ``XTRIM``, a concurrent ``XGROUP CREATE … 0`` (a shared group
created from the start) could ask for entries about to be trimmed; between checking a
consumer has nothing pending and ``XGROUP DELCONSUMER``, its ``XREADGROUP`` could hand it
entries, which ``DELCONSUMER`` would then drop from the pending list for good. A script
runs as a unit: no command interleaves, so each decision is taken on the state it acts on.
"""

from __future__ import annotations

import json
import logging
from binascii import crc_hqx
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..keys import glob_escape
from .base import EVENT_FIELD, DeadConsumer, DeadLetter, GroupInfo, JournalEntry, TopicInfo
from .base import text as _s
from .redis_presence import RedisPresence

if TYPE_CHECKING:
    from .redis_client import RedisClient
    from .redis_journal import RedisJournalStore

__all__ = ["LETTER_FIELD", "RedisAdmin", "key_slot"]

_PAGE = 500

log = logging.getLogger("agentbus.runtime")

#: The dead-letter stream field that carries one letter (JSON).
LETTER_FIELD = "letter"

# KEYS[1]: a topic stream. ARGV[1]: the id its groupless reader has consumed, or ''.
# The lowest id still needed is, over every group, its oldest pending entry if it has
# any, else the successor of its last-delivered id (every later entry is undelivered).
# Entries below it go (XTRIM MINID, exact). No group and no ARGV[1]: nothing is trimmed
# (a shared group created later starts from the beginning and would want them all).
# Ids are compared as (ms, seq) numbers: exact below 2^53, far beyond any real sequence.
TRIM_SCRIPT = """
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local function less(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end
local function succ(id)
  local p = parse(id)
  return {p[1], p[2] + 1}
end
local floor = nil
local groups = redis.call('XINFO', 'GROUPS', key)
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local need
  if tonumber(info['pending']) > 0 then
    need = parse(redis.call('XPENDING', key, info['name'])[2])
  else
    need = succ(info['last-delivered-id'])
  end
  if floor == nil or less(need, floor) then floor = need end
end
if floor == nil then
  if ARGV[1] == '' then return 0 end
  floor = succ(ARGV[1])
end
return redis.call('XTRIM', key, 'MINID', string.format('%.0f-%.0f', floor[1], floor[2]))
"""

# KEYS[1]: a topic stream. ARGV: group, idle ms. Removes the consumers of the group idle
# longer than that with nothing pending, in the same step as the check (see the module
# docstring); a missing group or stream removes nothing.
IDLE_CONSUMERS_SCRIPT = """
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(consumers) == 'table' and consumers.err then return {} end
local removed = {}
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if tonumber(info['pending']) == 0 and tonumber(info['idle']) > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed[#removed + 1] = info['name']
  end
end
return removed
"""

# KEYS: the topic, its dead-letter stream. ARGV: the payload, the letter id. Publishes,
# then deletes the letter: a publish that fails (out of memory) stops the script before
# the letter is touched, so a letter is never lost on the way back.
REQUEUE_SCRIPT = f"""
local id = redis.call('XADD', KEYS[1], '*', '{EVENT_FIELD}', ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[2])
return id
"""


def key_slot(key: bytes) -> int:
    """The Redis Cluster hash slot of ``key``: CRC16 (XMODEM) of its hash tag (the part
    between the first ``{`` and the next ``}``, when not empty), else of the whole key,
    modulo 16384. The same as ``redis.crc.key_slot``, without importing redis-py here."""
    start = key.find(b"{")
    if start > -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc_hqx(key, 0) % 16384


class RedisAdmin:
    """Topics, dead letters, retention and key deletion on Redis (a transport's ``admin``)."""

    def __init__(self, client: RedisClient, store: RedisJournalStore) -> None:
        self._c = client
        self._keys = client.keys
        self._store = store
        self._presence = RedisPresence(client)

    async def topics(self) -> list[TopicInfo]:
        async def run() -> list[TopicInfo]:
            # On a cluster redis-py's scan_iter walks every master (SCAN is sent to all
            # primaries); on a single Redis it is that one node.
            found = self._c.r.scan_iter(
                match=self._keys.topic_pattern(), count=_PAGE, _type="STREAM"
            )
            # Sorted by topic name (a key's closing brace would sort "a.10" before "a.1").
            keys = sorted({_s(k) async for k in found}, key=self._keys.topic_name)
            out: list[TopicInfo] = []
            for start in range(0, len(keys), _PAGE):
                out.extend(await self._describe(keys[start : start + _PAGE]))
            return out

        return await self._c.idempotent(run)

    async def _describe(self, keys: list[str]) -> list[TopicInfo]:
        """Length, groups and dead letters of each topic stream in ``keys``.

        One pipeline, not a transaction: each command has one key (a topic and its
        dead letters share a slot anyway), and on a cluster redis-py sends each node
        its part. A topic deleted since the scan is left out.
        """
        async with self._c.r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.xlen(key)
                pipe.xinfo_groups(key)
                pipe.xlen(self._keys.dead_letters(self._keys.topic_name(key)))
            replies = await pipe.execute(raise_on_error=False)
        out = []
        for n, key in enumerate(keys):
            length, groups, dlq = replies[3 * n : 3 * n + 3]
            if isinstance(groups, Exception) and "no such key" in str(groups):
                continue
            for reply in (length, groups, dlq):
                if isinstance(reply, Exception):
                    raise reply
            out.append(
                TopicInfo(
                    topic=self._keys.topic_name(key),
                    length=int(length),
                    groups=[
                        GroupInfo(
                            name=_s(g["name"]),
                            consumers=int(g["consumers"]),
                            pending=int(g["pending"]),
                            lag=None if g.get("lag") is None else int(g["lag"]),
                        )
                        for g in groups
                    ],
                    dead_letters=int(dlq),
                )
            )
        return out

    async def dead_letters(self, topic: str, *, count: int = 100) -> list[DeadLetter]:
        rows = await self._c.idempotent(
            lambda: self._c.r.xrange(self._keys.dead_letters(topic), count=count)
        )
        out = []
        for raw_id, fields in rows:
            body = json.loads(fields[LETTER_FIELD.encode()])
            out.append(DeadLetter.from_body(_s(raw_id), topic, body))
        return out

    async def remove_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> int:
        key = self._keys.dead_letters(topic)
        if ids is None:
            n = await self._c.idempotent(lambda: self._c.r.xlen(key))
            await self._c.idempotent(lambda: self._c.r.delete(key))
            return int(n)
        if not ids:
            return 0
        return int(await self._c.idempotent(lambda: self._c.r.xdel(key, *ids)))

    async def delete_prefix(self) -> int:
        """Delete every key under this transport's prefix (tests and teardown)."""

        async def run() -> int:
            n = 0
            batch: list[bytes] = []
            pattern = glob_escape(self._keys.prefix) + "*"
            # scan_iter walks every master of a cluster (the one node of a single Redis).
            async for key in self._c.r.scan_iter(match=pattern, count=_PAGE):
                batch.append(key)
                if len(batch) >= _PAGE:
                    n += await self._unlink(batch)
                    batch = []
            if batch:
                n += await self._unlink(batch)
            return n

        return await self._c.idempotent(run)

    async def _unlink(self, keys: list[bytes]) -> int:
        """``UNLINK`` ``keys``, one command per hash slot (a multi-key command must stay
        in one slot on a cluster), pipelined: redis-py sends each node its part."""
        by_slot: dict[int, list[bytes]] = {}
        for key in keys:
            by_slot.setdefault(key_slot(key), []).append(key)
        async with self._c.r.pipeline(transaction=False) as pipe:
            for group in by_slot.values():
                # execute_command: the cluster pipeline's unlink() takes one key only.
                pipe.execute_command("UNLINK", *group)
            return sum(int(n) for n in await pipe.execute())

    async def retry_dead_letter(
        self, topic: str, letter_id: str, *, records: Sequence[JournalEntry] = ()
    ) -> str | None:
        dlq = self._keys.dead_letters(topic)
        outbox = self._store.outbox(topic, records)

        async def run() -> str | None:
            # WATCH the dead-letter stream: a concurrent retry or purge of the same letter
            # voids our EXEC, and the next round finds the letter gone (never published
            # twice). The topic, its dead letters and its outbox share the topic's slot.
            async with self._c.r.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(dlq)
                        rows = await pipe.xrange(dlq, min=letter_id, max=letter_id)
                        if not rows:
                            await pipe.reset()
                            return None
                        body = json.loads(rows[0][1][LETTER_FIELD.encode()])
                        payload = str(body.get("payload", "")).encode("utf-8")
                        pipe.multi()
                        pipe.eval(
                            REQUEUE_SCRIPT, 2, self._keys.topic(topic), dlq, payload, letter_id
                        )
                        self._store.queue(pipe, outbox)
                        results = await pipe.execute()
                        if outbox is not None:
                            outbox.id = _s(results[-1])
                        return _s(results[0])
                    except self._c.watch_error:
                        continue

        entry_id = await self._c.call(run)
        if entry_id is not None and outbox is not None:
            self._store.relay_queue.submit([outbox])  # copied in the background
        return entry_id

    async def trim_acknowledged(self, topic: str, *, consumed: str | None = None) -> int:
        key = self._keys.topic(topic)
        return int(
            await self._c.idempotent(
                lambda: self._c.r.eval(TRIM_SCRIPT, 1, key, consumed or "")  # one unit
            )
        )

    async def remove_idle_consumers(self, topic: str, group: str, *, idle_ms: int) -> list[str]:
        key = self._keys.topic(topic)
        removed = await self._c.idempotent(
            lambda: self._c.r.eval(IDLE_CONSUMERS_SCRIPT, 1, key, group, int(idle_ms))
        )
        return sorted(_s(name) for name in removed)

    # -- presence (its scripts are in redis_presence) ----------------------------------------
    async def announce(
        self,
        consumer: str,
        *,
        groups: Sequence[tuple[str, str]],
        inbox: str | None,
        every_ms: int,
    ) -> None:
        await self._presence.announce(consumer, groups=groups, inbox=inbox, every_ms=every_ms)

    async def heartbeat(self, consumer: str) -> bool:
        return await self._presence.heartbeat(consumer)

    async def withdraw(self, consumer: str) -> None:
        await self._presence.withdraw(consumer)

    async def prune_dead_consumers(
        self, *, idle_ms: int, dry_run: bool = False
    ) -> list[DeadConsumer]:
        return await self._presence.prune_dead_consumers(idle_ms=idle_ms, dry_run=dry_run)
