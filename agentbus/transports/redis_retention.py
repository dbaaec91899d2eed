"""Retention on Redis: trimming acknowledged entries, idle consumers, old runs, DLQ retry.

:class:`RedisRetention` is a mixin of
:class:`~agentbus.transports.redis.RedisStreamsTransport`; it needs the transport's client
(``_r``), key builder and call helpers. Nothing here imports redis-py (the transport
hands over its ``WatchError`` class as ``_watch_error``).

Why scripts: deciding what may go and removing it must be one step. Between reading a
group's state and an ``XTRIM``, a concurrent ``XGROUP CREATE … 0`` (a shared group
created from the start) could ask for entries about to be trimmed; between checking a
consumer has nothing pending and ``XGROUP DELCONSUMER``, its ``XREADGROUP`` could hand it
entries, which ``DELCONSUMER`` would then drop from the pending list for good. A script
runs as a unit: no command interleaves, so each decision is taken on the state it acts on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..keys import Keys
from .base import EVENT_FIELD, JournalEntry
from .base import text as _s
from .redis_admin import LETTER_FIELD

__all__ = ["RedisRetention"]

T = TypeVar("T")

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

# KEYS: a run's hash, its journal stream. ARGV[1]: the cutoff in ms. Deletes both when
# the run's last activity (start, end, newest journal entry: its id is the time Redis
# wrote it) is older than the cutoff; returns 1 then (also when both are already gone,
# so that a half-finished earlier prune gets its index entries removed), else 0.
PRUNE_RUN_SCRIPT = """
local started = redis.call('HGET', KEYS[1], 'started')
local ended = redis.call('HGET', KEYS[1], 'ended')
local last = 0
if started then last = math.max(last, tonumber(started) * 1000) end
if ended then last = math.max(last, tonumber(ended) * 1000) end
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if newest[1] then
  local ms = string.match(newest[1][1], '^(%d+)-')
  last = math.max(last, tonumber(ms))
end
if last >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

# KEYS: a run's hash, its journal stream. ARGV[1]: the cutoff in ms. For a journal whose
# run was never saved (``orphans``, records written after their run was pruned): deletes
# it when its newest entry is older than the cutoff; returns 1 then. A saved run is left
# to PRUNE_RUN_SCRIPT (its start and end count too).
PRUNE_UNSAVED_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if newest[1] then
  local ms = string.match(newest[1][1], '^(%d+)-')
  if tonumber(ms) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: the topic, its dead-letter stream. ARGV: the payload, the letter id. Publishes,
# then deletes the letter: a publish that fails (out of memory) stops the script before
# the letter is touched, so a letter is never lost on the way back.
REQUEUE_SCRIPT = f"""
local id = redis.call('XADD', KEYS[1], '*', '{EVENT_FIELD}', ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[2])
return id
"""

_PAGE = 500
#: The run that records what concerns events without a run id (``_subscription``).
ORPHAN_RUN = "orphans"
#: Seconds between scans for other journals of runs never saved (see ``prune_runs``).
UNSAVED_SCAN_EVERY = 3600.0


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN pattern (a prefix may hold ``*?[]``)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisRetention:
    """Retention and dead-letter retry on Redis (a mixin of the Redis transport)."""

    keys: Keys
    _r: Any
    #: redis-py's WatchError, set by the transport (the one module importing redis-py).
    _watch_error: type[Exception]
    #: When ``prune_runs`` last scanned for journals of runs never saved (monotonic).
    _unsaved_scanned: float | None = None

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def _idempotent(self, fn: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
        raise NotImplementedError

    def _queue_journal(self, pipe: Any, journal: Sequence[JournalEntry]) -> None:
        raise NotImplementedError

    async def trim_acknowledged(self, topic: str, *, consumed: str | None = None) -> int:
        key = self.keys.topic(topic)
        return int(
            await self._idempotent(
                lambda: self._r.eval(TRIM_SCRIPT, 1, key, consumed or "")  # one unit
            )
        )

    async def remove_idle_consumers(self, topic: str, group: str, *, idle_ms: int) -> list[str]:
        key = self.keys.topic(topic)
        removed = await self._idempotent(
            lambda: self._r.eval(IDLE_CONSUMERS_SCRIPT, 1, key, group, int(idle_ms))
        )
        return sorted(_s(name) for name in removed)

    async def prune_runs(self, *, before: float) -> list[str]:
        cutoff_ms = int(before * 1000)
        pruned: list[str] = []
        kept = 0  # candidates still active: skipped by the next page's offset

        async def page() -> list[str]:
            # The index's score is the start time; a run that started later has been
            # active since, so only earlier ones are candidates.
            ids = await self._r.zrangebyscore(
                self.keys.runs(), "-inf", f"({before!r}", start=kept, num=_PAGE
            )
            return [_s(i) for i in ids]

        while True:
            ids = await self._idempotent(page)
            if not ids:
                break

            async def decide(batch: list[str] = ids) -> list[Any]:
                async with self._r.pipeline(transaction=False) as pipe:
                    for run_id in batch:
                        pipe.eval(
                            PRUNE_RUN_SCRIPT,
                            2,
                            self.keys.run(run_id),
                            self.keys.journal(run_id),
                            cutoff_ms,
                        )
                    return list(await pipe.execute())

            verdicts = await self._idempotent(decide)
            gone = [run_id for run_id, hit in zip(ids, verdicts, strict=True) if hit]
            kept += len(ids) - len(gone)
            if gone:
                # The index and the counters hash are shared by all runs (other slots):
                # removed after the run's own keys, so a crash in between leaves index
                # entries that the next prune finds without keys and removes.
                async def unindex(gone: list[str] = gone) -> None:
                    async with self._r.pipeline(transaction=False) as pipe:
                        pipe.zrem(self.keys.runs(), *gone)
                        pipe.hdel(self.keys.journal_counts(), *gone)
                        await pipe.execute()

                await self._idempotent(unindex)
                pruned.extend(gone)
            if len(ids) < _PAGE:
                break
        # Journals of runs never saved are in no index. The orphans journal is checked
        # on every call; the others (records written after their run was pruned) need a
        # scan of the key space (~28 us per journal), done at most once an hour here.
        now = time.monotonic()
        scan = self._unsaved_scanned is None or now - self._unsaved_scanned > UNSAVED_SCAN_EVERY
        pruned.extend(await self._prune_unsaved(cutoff_ms, scan=scan))
        if scan:
            self._unsaved_scanned = now
        return pruned

    async def _prune_unsaved(self, cutoff_ms: int, *, scan: bool) -> list[str]:
        """Prune journals with no run record older than ``cutoff_ms``: the orphans
        journal, and with ``scan`` every other one found by a scan of the keys."""
        marker = self.keys.journal("")

        async def find() -> list[str]:
            found = self._r.scan_iter(match=_glob_escape(marker) + "*", count=_PAGE)
            return [_s(key).removeprefix(marker) async for key in found]

        run_ids = sorted({ORPHAN_RUN, *(await self._idempotent(find) if scan else ())})
        pruned: list[str] = []
        for start in range(0, len(run_ids), _PAGE):
            batch = run_ids[start : start + _PAGE]

            async def decide(batch: list[str] = batch) -> list[Any]:
                async with self._r.pipeline(transaction=False) as pipe:
                    for run_id in batch:
                        pipe.eval(
                            PRUNE_UNSAVED_SCRIPT,
                            2,
                            self.keys.run(run_id),
                            self.keys.journal(run_id),
                            cutoff_ms,
                        )
                    return list(await pipe.execute())

            verdicts = await self._idempotent(decide)
            gone = [run_id for run_id, hit in zip(batch, verdicts, strict=True) if hit]
            if gone:

                async def uncount(gone: list[str] = gone) -> None:
                    await self._r.hdel(self.keys.journal_counts(), *gone)

                await self._idempotent(uncount)
                pruned.extend(gone)
        return pruned

    async def retry_dead_letter(
        self, topic: str, letter_id: str, *, journal: Sequence[JournalEntry] = ()
    ) -> str | None:
        dlq = self.keys.dead_letters(topic)

        async def run() -> str | None:
            # WATCH the dead-letter stream: a concurrent retry or purge of the same letter
            # voids our EXEC, and the next round finds the letter gone (never published twice).
            async with self._r.pipeline(transaction=True) as pipe:
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
                            REQUEUE_SCRIPT, 2, self.keys.topic(topic), dlq, payload, letter_id
                        )
                        self._queue_journal(pipe, journal)
                        entry_id = await pipe.execute()
                        return _s(entry_id[0])
                    except self._watch_error:
                        continue

        return await self._call(run)
