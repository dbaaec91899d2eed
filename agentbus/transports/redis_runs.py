"""The Redis run index: saving, listing, pruning and dropping runs.

:class:`RedisRuns` is the run half of the Redis transport's journal store
(:class:`~agentbus.transports.redis_journal.RedisJournalStore` delegates to it); the
journal streams' write and read half stays there. It runs its commands through the
shared :class:`~agentbus.transports.redis_client.RedisClient`; nothing here imports
redis-py.

Layout (see :mod:`agentbus.keys`): a run's hash (metadata and the counters the write
scripts keep: events, tokens, records) and its journal stream share the run's slot
``{R}``; the index is :data:`~agentbus.keys.RUN_INDEX_BUCKETS` sorted sets, each its own
slot, a run in ``run_index(run_id)`` scored by its start time. No script or ``MULTI``
here spans two slots: what must change together (a run's hash and journal) does, and
the index is written by separate calls ordered so that a crash between them leaves
nothing that is never cleaned up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from ..keys import RUN_INDEX_BUCKETS, Keys
from .base import Reservation, RunInfo
from .base import text as _s

if TYPE_CHECKING:
    from .redis_client import RedisClient

__all__ = [
    "DROP_RUN_SCRIPT",
    "MARK_SCRIPT",
    "ORPHAN_RUN",
    "PRUNE_RUN_SCRIPT",
    "PRUNE_UNSAVED_SCRIPT",
    "RESERVE_SCRIPT",
    "RedisRuns",
]

# KEYS: a run's hash, its journal stream, its questions. ARGV[1]: the cutoff in ms.
# Deletes them when the run's last activity (start, end, newest journal entry: its id is the time Redis
# wrote it) is older than the cutoff; returns 1 then (also when both are already gone,
# so that a half-finished earlier prune, or a save that crashed after indexing the run,
# gets its index entry removed), else 0.
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
redis.call('DEL', unpack(KEYS))
return 1
"""

# KEYS: a run's hash, its journal stream. ARGV[1]: the cutoff in ms. For a journal whose
# run was never saved (``orphans``, records written after their run was pruned): its
# hash holds at most the counters the write scripts keep. Deletes both when the newest
# entry is older than the cutoff; returns 1 then. A saved run (one with a start time) is
# left to PRUNE_RUN_SCRIPT (its start and end count too).
PRUNE_UNSAVED_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], 'started') == 1 or redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if newest[1] then
  local ms = string.match(newest[1][1], '^(%d+)-')
  if tonumber(ms) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

# A run's mark (see JournalStore.journal_mark), from its hash and journal stream (one
# slot): the journal's length and newest entry id (XADD ids only grow, so every append
# changes it) and a digest of the hash's fields and values (metadata and counters), each
# pair length-prefixed and the pairs sorted (a listpack keeps insertion order, a large
# hash none). False (nil) when neither key exists. Shared by the two scripts below.
_MARK_FUNCTION = """
local function mark(run, journal)
  if redis.call('EXISTS', run, journal) == 0 then return false end
  local newest = redis.call('XREVRANGE', journal, '+', '-', 'COUNT', 1)
  local last = '0-0'
  if newest[1] then last = newest[1][1] end
  local flat = redis.call('HGETALL', run)
  local fields = {}
  for i = 1, #flat, 2 do
    fields[#fields + 1] = #flat[i] .. ':' .. flat[i] .. #flat[i + 1] .. ':' .. flat[i + 1]
  end
  table.sort(fields)
  return redis.call('XLEN', journal) .. '/' .. last .. '/' .. redis.sha1hex(table.concat(fields))
end
"""

# KEYS: a run's hash, its journal stream. Its mark, or nil.
MARK_SCRIPT = _MARK_FUNCTION + "return mark(KEYS[1], KEYS[2])\n"

# KEYS: a run's hash, its journal stream (and its questions). ARGV[1]: the mark the
# caller read the run at. Deletes them if the run's mark is still that one: a record relayed or written since,
# a save or a counter change in between keeps the run (0). 1 when deleted, or when both
# were already gone (the caller then removes a leftover index entry).
DROP_RUN_SCRIPT = (
    _MARK_FUNCTION
    + """
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then return 1 end
if mark(KEYS[1], KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', unpack(KEYS))
return 1
"""
)

# KEYS: a run's hash. ARGV: triples (counter, amount, limit or "" for none). Adds every
# amount to the hash field "spent:<counter>" if each limited counter is under its limit
# and the amount fits (agentbus.transports.base.fits, the same test); all or nothing, in
# the run's slot. Returns {1 or 0, the counter over its limit or "", then each counter's
# spend after}. Spend lives in the run's hash so that drop_run and prune_runs take it too.
RESERVE_SCRIPT = """
local n = #ARGV / 3
local spent = {}
for i = 0, n - 1 do
  local v = redis.call('HGET', KEYS[1], 'spent:' .. ARGV[3 * i + 1])
  spent[i] = tonumber(v or '0')
end
for i = 0, n - 1 do
  local limit = ARGV[3 * i + 3]
  if limit ~= '' then
    local lim, amount = tonumber(limit), tonumber(ARGV[3 * i + 2])
    if not (spent[i] < lim and spent[i] + amount <= lim) then
      local out = {0, ARGV[3 * i + 1]}
      for j = 0, n - 1 do out[#out + 1] = tostring(spent[j]) end
      return out
    end
  end
end
local out = {1, ''}
for i = 0, n - 1 do
  local amount = tonumber(ARGV[3 * i + 2])
  if amount ~= 0 then
    out[#out + 1] = redis.call('HINCRBYFLOAT', KEYS[1], 'spent:' .. ARGV[3 * i + 1], ARGV[3 * i + 2])
  else
    out[#out + 1] = tostring(spent[i])
  end
end
return out
"""

_PAGE = 500
#: The run that records what concerns events without a run id (``_subscription``).
ORPHAN_RUN = "orphans"
#: Seconds between scans for other journals of runs never saved (see ``prune_runs``).
UNSAVED_SCAN_EVERY = 3600.0
_STARTED = b"started"
_RECORDS = b"records"


class RedisRuns:
    """Run metadata, counters and the bucketed run index on Redis."""

    def __init__(self, client: RedisClient) -> None:
        self._c = client
        self.keys: Keys = client.keys
        #: When ``prune_runs`` last scanned for journals of runs never saved (monotonic).
        self._unsaved_scanned: float | None = None

    @property
    def _r(self) -> Any:
        return self._c.r

    async def save_run(self, run: RunInfo) -> None:
        """Store ``run``'s metadata (its counters are kept) and index it."""
        mapping: dict[str, str] = {
            "name": run.name,
            "status": run.status,
            "started": repr(run.started),
            "meta": json.dumps(run.meta),
        }
        if run.ended is not None:
            mapping["ended"] = repr(run.ended)

        index, key = self.keys.run_index(run.run_id), self.keys.run(run.run_id)

        async def go() -> None:
            # Two slots, two calls, the index first. A crash in between leaves an index
            # entry without a run: list_runs skips it and prune_runs removes it. The
            # other order would leave a run in no index, which nothing lists or prunes.
            # (run_in_slot: with ?wait=N each write waits for its replicas, as others do.)
            await self._c.run_in_slot(
                index, lambda p: p.zadd(index, {run.run_id: run.started}), transaction=False
            )
            await self._c.run_in_slot(
                key, lambda p: p.hset(key, mapping=mapping), transaction=False
            )

        await self._c.idempotent(go)

    async def list_runs(self, *, limit: int = 100) -> list[RunInfo]:
        """The ``limit`` runs started last, newest first."""
        runs, _ = await self.newest(limit)
        return runs

    async def newest(
        self, limit: int, *, since: float | None = None, until: float | None = None
    ) -> tuple[list[RunInfo], bool]:
        """The ``limit`` runs started last (within ``since <= started < until`` when
        given: the index's score is the start time), newest first, and whether the index
        holds more of them than that."""
        if limit <= 0:
            return [], False
        low = "-inf" if since is None else repr(since)
        high = "+inf" if until is None else f"({until!r}"

        async def run() -> tuple[list[RunInfo], bool]:
            # The newest `limit` of each bucket hold the newest `limit` overall. One
            # pipeline, not a transaction: on a cluster redis-py sends each node its part.
            async with self._r.pipeline(transaction=False) as pipe:
                for bucket in range(RUN_INDEX_BUCKETS):
                    if since is None and until is None:
                        pipe.zrevrange(self.keys.runs(bucket), 0, limit - 1, withscores=True)
                    else:
                        pipe.zrevrangebyscore(
                            self.keys.runs(bucket), high, low, start=0, num=limit, withscores=True
                        )
                replies = await pipe.execute()
            # (score, id) descending: the order one ZREVRANGE over a single index gave.
            indexed = sorted(
                ((float(score), _s(member)) for reply in replies for member, score in reply),
                reverse=True,
            )
            ids = [run_id for _, run_id in indexed[:limit]]
            async with self._r.pipeline(transaction=False) as pipe:
                for run_id in ids:
                    pipe.hgetall(self.keys.run(run_id))
                hashes = await pipe.execute()
            # An index entry without metadata: a save that crashed after indexing (or a
            # prune or drop half done). Not a run to show; prune_runs removes the entry.
            found = [(i, f) for i, f in zip(ids, hashes, strict=True) if _STARTED in f]
            lengths = await self._lengths([i for i, f in found if _RECORDS not in f])
            return [_run_info(i, f, lengths) for i, f in found], len(indexed) > limit

        return await self._c.idempotent(run)

    async def get_run(self, run_id: str) -> RunInfo | None:
        """``run_id``'s metadata and counters; ``None`` when nothing but records is known."""

        async def run() -> RunInfo | None:
            fields = await self._r.hgetall(self.keys.run(run_id))
            # A hash with only the record count: records journaled, never saved, no
            # event or token counted (what counts as no run, as before the count moved
            # into the run's hash).
            if not any(k != _RECORDS for k in fields):
                return None
            lengths = await self._lengths([] if _RECORDS in fields else [run_id])
            return _run_info(run_id, fields, lengths)

        return await self._c.idempotent(run)

    async def reserve(
        self, run_id: str, amounts: Mapping[str, float], limits: Mapping[str, float]
    ) -> Reservation:
        """Check and add a run's spend in one script (:data:`RESERVE_SCRIPT`)."""
        names = [*amounts, *(n for n in limits if n not in amounts)]
        args: list[str] = []
        for name in names:
            limit = limits.get(name)
            args += [
                name,
                repr(float(amounts.get(name, 0.0))),
                "" if limit is None else repr(float(limit)),
            ]
        key = self.keys.run(run_id)
        # Not retried on a lost connection: the script may have run, and a second run
        # would charge twice. The caller fails the call instead.
        reply = await self._c.call(lambda: self._r.eval(RESERVE_SCRIPT, 1, key, *args))
        granted, over = int(reply[0]) == 1, _s(reply[1])
        spent = {name: float(_s(v)) for name, v in zip(names, reply[2:], strict=True)}
        return Reservation(granted, spent, over or None)

    async def journal_mark(self, run_id: str) -> str | None:
        """A token that changes with every write to the run (:data:`MARK_SCRIPT`)."""
        key, journal = self.keys.run(run_id), self.keys.journal(run_id)
        reply = await self._c.idempotent(lambda: self._r.eval(MARK_SCRIPT, 2, key, journal))
        return None if reply is None else _s(reply)

    async def drop_run(self, run_id: str, *, mark: str) -> bool:
        """Delete the run's hash and journal if its mark is still ``mark`` (one script in
        the run's slot), then its index entry (another slot: a call of its own)."""
        key, journal = self.keys.run(run_id), self.keys.journal(run_id)
        questions = self.keys.questions(run_id)
        # Not retried: after a lost reply the run may be gone and a late record have
        # started a new journal, so a second try would answer False for a deleted run.
        (dropped,) = await self._c.call(
            lambda: self._c.run_in_slot(
                key,
                lambda p: p.eval(DROP_RUN_SCRIPT, 3, key, journal, questions, mark),
                transaction=False,
            )
        )
        if not dropped:
            return False
        # After the keys, as prune_runs does: a crash in between leaves an index entry
        # without a run, which list_runs skips and prune_runs (or a drop) removes.
        await self._c.idempotent(partial(self._unindex, {self.keys.run_bucket(run_id): [run_id]}))
        return True

    async def _lengths(self, run_ids: list[str]) -> dict[str, int]:
        """The journal length of each run (its record count in agentbus 0.1 journals,
        which held one record per entry and no ``records`` counter)."""
        if not run_ids:
            return {}
        async with self._r.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.xlen(self.keys.journal(run_id))
            lengths = await pipe.execute()
        return {run_id: int(n) for run_id, n in zip(run_ids, lengths, strict=True)}

    async def prune_runs(self, *, before: float) -> list[str]:
        """Delete runs whose last activity is before ``before``; returns their ids."""
        cutoff_ms = int(before * 1000)
        pruned: list[str] = []
        # Per bucket, candidates found still active: skipped by that bucket's next page.
        kept = dict.fromkeys(range(RUN_INDEX_BUCKETS), 0)
        while kept:
            buckets = sorted(kept)

            async def page(buckets: list[int] = buckets) -> list[list[str]]:
                # The index's score is the start time; a run that started later has
                # been active since, so only earlier ones are candidates.
                async with self._r.pipeline(transaction=False) as pipe:
                    for b in buckets:
                        pipe.zrangebyscore(
                            self.keys.runs(b), "-inf", f"({before!r}", start=kept[b], num=_PAGE
                        )
                    return [[_s(i) for i in ids] for ids in await pipe.execute()]

            pages = await self._c.idempotent(page)
            candidates = [
                (b, run_id) for b, ids in zip(buckets, pages, strict=True) for run_id in ids
            ]
            for b, ids in zip(buckets, pages, strict=True):
                if len(ids) < _PAGE:
                    del kept[b]
            if not candidates:
                continue
            verdicts = await self._c.idempotent(
                partial(self._evals, PRUNE_RUN_SCRIPT, [r for _, r in candidates], cutoff_ms)
            )
            gone: dict[int, list[str]] = {}
            for (b, run_id), hit in zip(candidates, verdicts, strict=True):
                if hit:
                    gone.setdefault(b, []).append(run_id)
                elif b in kept:
                    kept[b] += 1
            if gone:
                await self._c.idempotent(partial(self._unindex, gone))
                pruned.extend(run_id for ids in gone.values() for run_id in ids)
        # Journals of runs never saved are in no index. The orphans journal is checked
        # on every call; the others (records written after their run was pruned) need a
        # scan of the key space (~28 us per journal), done at most once an hour here.
        now = time.monotonic()
        scan = self._unsaved_scanned is None or now - self._unsaved_scanned > UNSAVED_SCAN_EVERY
        pruned.extend(await self._prune_unsaved(cutoff_ms, scan=scan))
        if scan:
            self._unsaved_scanned = now
        return pruned

    async def _evals(self, script: str, run_ids: list[str], cutoff_ms: int) -> list[Any]:
        """``script`` on each run's hash and journal (one slot per run), pipelined."""
        async with self._r.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                keys = [self.keys.run(run_id), self.keys.journal(run_id)]
                if script is PRUNE_RUN_SCRIPT:  # a run's questions go with it
                    keys.append(self.keys.questions(run_id))
                pipe.eval(script, len(keys), *keys, cutoff_ms)
            return list(await pipe.execute())

    async def _unindex(self, gone: dict[int, list[str]]) -> None:
        """Remove pruned (or dropped) runs from their index buckets (after their keys: a crash in
        between leaves entries the next prune finds without keys and removes)."""
        async with self._r.pipeline(transaction=False) as pipe:
            for b, ids in gone.items():
                pipe.zrem(self.keys.runs(b), *ids)
            await pipe.execute()
        # A save of one of these runs racing this prune (index entry, then metadata)
        # may have written its metadata after the script deleted the old one: put it
        # back in the index, or nothing would ever list or prune it.
        ids = [run_id for b in gone for run_id in gone[b]]
        async with self._r.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hget(self.keys.run(run_id), "started")
            started = await pipe.execute()
        back = [(i, float(s)) for i, s in zip(ids, started, strict=True) if s is not None]
        if back:
            async with self._r.pipeline(transaction=False) as pipe:
                for run_id, score in back:
                    pipe.zadd(self.keys.run_index(run_id), {run_id: score})
                await pipe.execute()

    async def _prune_unsaved(self, cutoff_ms: int, *, scan: bool) -> list[str]:
        """Prune journals with no run record older than ``cutoff_ms``: the orphans
        journal, and with ``scan`` every other one found by a scan of the keys (on a
        cluster, redis-py's ``scan_iter`` walks every master)."""

        async def find() -> list[str]:
            found = self._r.scan_iter(match=self.keys.journal_pattern(), count=_PAGE)
            return [self.keys.journal_run(_s(key)) async for key in found]

        run_ids = sorted({ORPHAN_RUN, *(await self._c.idempotent(find) if scan else ())})
        pruned: list[str] = []
        for start in range(0, len(run_ids), _PAGE):
            batch = run_ids[start : start + _PAGE]
            verdicts = await self._c.idempotent(
                partial(self._evals, PRUNE_UNSAVED_SCRIPT, batch, cutoff_ms)
            )
            pruned.extend(run_id for run_id, hit in zip(batch, verdicts, strict=True) if hit)
        return pruned


def _run_info(run_id: str, fields: dict[bytes, bytes], lengths: dict[str, int]) -> RunInfo:
    """A run from its hash; its record count is the write scripts' counter, else (a 0.1
    journal) its journal's length."""
    f = {_s(k): _s(v) for k, v in fields.items()}
    records = int(f["records"]) if "records" in f else lengths.get(run_id, 0)
    events = int(f.get("events", 0))
    meta = json.loads(f.get("meta", "{}"))
    if f.get("ended") and isinstance(meta, dict):
        # The relay counts an event as late by when it was published (JOURNAL_SCRIPT):
        # the count Run.finish read may still have missed a reply being relayed then.
        meta["events_at_end"] = events - int(f.get("late", 0))
    return RunInfo(
        run_id=run_id,
        name=f.get("name", ""),
        status=f.get("status", "unknown"),
        started=float(f.get("started", 0.0)),
        ended=float(f["ended"]) if f.get("ended") else None,
        events=events,
        records=records,
        tokens=int(f.get("tokens", 0)),
        meta=meta,
    )
