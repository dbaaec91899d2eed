"""The Redis side of the journal: run index, journal streams and the write scripts.

:class:`RedisJournalStore` is the Redis transport's ``store``; it runs its commands
through the shared :class:`~agentbus.transports.redis_client.RedisClient`. The broker
(:mod:`agentbus.transports.redis`) writes a call's records with :meth:`RedisJournalStore.queue`
(or, for publishes, :func:`publish_args`). Nothing here imports redis-py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import _json
from ..keys import Keys
from .base import EVENT_FIELD, JournalEntry, JournalRecord, RunInfo
from .base import text as _s
from .chunks import chunk_by_run, encode_chunk

if TYPE_CHECKING:
    from ..signing import Signer
    from .redis_client import RedisClient

__all__ = ["CHUNK_FIELD", "PUBLISH_SCRIPT", "RECORD_FIELD", "RedisJournalStore", "publish_args"]


#: The journal stream field of a chunk: a JSON array of records written together.
CHUNK_FIELD = "c"
#: The field of an entry holding one record (journals written by agentbus 0.1).
RECORD_FIELD = "r"

# A group commit of publishes in one script call: the events, their journal records and the
# run counters, atomically (scripts run as a unit) and in one command, whose arguments
# redis-py packs once instead of per XADD. A failed event XADD is reported per event
# (a "!"-prefixed error) so each caller sees its own outcome. The ids and errors come back
# as one newline-separated string (neither can contain a newline): redis-py parses one
# reply instead of one per event, which is most of what a reply costs it.
#
# A run's records in one call go into one journal entry, a chunk (a JSON array): one
# argument for redis-py to pack and one XADD for Redis instead of one per record, and a
# journal stream a few hundred times shorter. The last key counts records per run.
PUBLISH_SCRIPT = f"""
local n = tonumber(ARGV[1])
local out = {{}}
for i = 1, n do
  local r = redis.pcall('XADD', KEYS[i], '*', '{EVENT_FIELD}', ARGV[1 + i])
  if type(r) == 'table' and r.err then out[i] = '!' .. r.err else out[i] = r end
end
local a = 1 + n
local k = n
local streams = tonumber(ARGV[a + 1])
a = a + 1
for s = 1, streams do
  k = k + 1
  redis.call('XADD', KEYS[k], '*', '{CHUNK_FIELD}', ARGV[a + 3])
  redis.call('HINCRBY', KEYS[#KEYS], ARGV[a + 1], ARGV[a + 2])
  a = a + 3
end
local counters = tonumber(ARGV[a + 1])
a = a + 1
for c = 1, counters do
  k = k + 1
  redis.call('HINCRBY', KEYS[k], ARGV[a + 1], ARGV[a + 2])
  a = a + 2
end
return table.concat(out, '\\n')
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

_PAGE = 500
#: The run that records what concerns events without a run id (``_subscription``).
ORPHAN_RUN = "orphans"
#: Seconds between scans for other journals of runs never saved (see ``prune_runs``).
UNSAVED_SCAN_EVERY = 3600.0


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN pattern (a prefix may hold ``*?[]``)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def publish_args(
    keys: Keys,
    items: Sequence[tuple[str, bytes]],
    records: Sequence[JournalEntry],
    signer: Signer | None = None,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of :data:`PUBLISH_SCRIPT` for ``items`` and their journal records.

    ``signer`` signs the records (see :func:`~agentbus.transports.chunks.encode_chunk`).
    """
    script_keys = [keys.topic(topic) for topic, _ in items]
    args: list[Any] = [len(script_keys)]
    args.extend(payload for _, payload in items)
    chunks = chunk_by_run(records)
    counters: list[tuple[str, str, int]] = []
    args.append(len(chunks))
    for chunk in chunks:
        script_keys.append(keys.journal(chunk.run_id))
        args.extend((chunk.run_id, len(chunk.entries), encode_chunk(chunk.entries, signer)))
        if chunk.events:
            counters.append((chunk.run_id, "events", chunk.events))
        if chunk.tokens:
            counters.append((chunk.run_id, "tokens", chunk.tokens))
    args.append(len(counters))
    for run_id, field, amount in counters:
        script_keys.append(keys.run(run_id))
        args.extend((field, amount))
    script_keys.append(keys.journal_counts())
    return script_keys, args


class RedisJournalStore:
    """Runs and journal records on Redis (a transport's ``store``)."""

    #: Signs every journal record written (set by a :class:`~agentbus.Runtime` with a signer).
    signer: Signer | None = None

    def __init__(self, client: RedisClient) -> None:
        self._c = client
        self.keys: Keys = client.keys
        #: When ``prune_runs`` last scanned for journals of runs never saved (monotonic).
        self._unsaved_scanned: float | None = None

    @property
    def _r(self) -> Any:
        return self._c.r

    def queue(self, pipe: Any, records: Sequence[JournalEntry]) -> None:
        """Queue journal records (and their run counters) on ``pipe`` as one script call.

        The same script as a publish, with no events: redis-py spends far more client CPU
        packing and parsing a command than Redis spends running it, so one EVAL beats an
        XADD per record. Same entries, same order per run. (How the broker writes a
        call's records atomically with its acks or dead letters.)
        """
        if not records:
            return
        keys, args = publish_args(self.keys, (), records, self.signer)
        pipe.eval(PUBLISH_SCRIPT, len(keys), *keys, *args)

    # -- journal --------------------------------------------------------------------------------
    async def save_run(self, run: RunInfo) -> None:
        mapping: dict[str, str] = {
            "name": run.name,
            "status": run.status,
            "started": repr(run.started),
            "meta": json.dumps(run.meta),
        }
        if run.ended is not None:
            mapping["ended"] = repr(run.ended)

        async def go() -> None:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.run(run.run_id), mapping=mapping)
                pipe.zadd(self.keys.runs(), {run.run_id: run.started})
                await pipe.execute()

        await self._c.idempotent(go)

    async def write_journal(self, records: Sequence[JournalEntry]) -> None:
        if not records:
            return

        async def run() -> None:
            async with self._r.pipeline(transaction=True) as pipe:
                self.queue(pipe, records)
                await pipe.execute()

        await self._c.call(run)

    async def list_runs(self, *, limit: int = 100) -> list[RunInfo]:
        async def run() -> list[RunInfo]:
            ids = [_s(i) for i in await self._r.zrevrange(self.keys.runs(), 0, limit - 1)]
            async with self._r.pipeline(transaction=False) as pipe:
                for run_id in ids:
                    pipe.hgetall(self.keys.run(run_id))
                    pipe.hget(self.keys.journal_counts(), run_id)
                    pipe.xlen(self.keys.journal(run_id))
                results = await pipe.execute()
            return [
                _run_info(run_id, results[3 * n], _records(*results[3 * n + 1 : 3 * n + 3]))
                for n, run_id in enumerate(ids)
            ]

        return await self._c.idempotent(run)

    async def get_run(self, run_id: str) -> RunInfo | None:
        async def run() -> RunInfo | None:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.run(run_id))
                pipe.hget(self.keys.journal_counts(), run_id)
                pipe.xlen(self.keys.journal(run_id))
                fields, counted, length = await pipe.execute()
            return _run_info(run_id, fields, _records(counted, length)) if fields else None

        return await self._c.idempotent(run)

    async def read_journal(self, run_id: str) -> list[JournalRecord]:
        key = self.keys.journal(run_id)
        out: list[JournalRecord] = []
        start = "-"
        while True:
            page_start = start
            rows: list[Any] = await self._c.idempotent(
                lambda: self._r.xrange(key, min=page_start, count=10_000)  # noqa: B023
            )
            for raw_id, fields in rows:
                entry_id = _s(raw_id)
                chunk = fields.get(_CHUNK)
                if chunk is not None:
                    out.extend(
                        JournalRecord(seq=f"{entry_id}:{i}", run_id=run_id, record=record)
                        for i, record in enumerate(_json.loads(chunk))
                    )
                else:  # one record per entry (agentbus 0.1)
                    out.append(
                        JournalRecord(
                            seq=entry_id, run_id=run_id, record=_json.loads(fields[_RECORD])
                        )
                    )
            if len(rows) < 10_000:
                return out
            start = "(" + _s(rows[-1][0])

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
            ids = await self._c.idempotent(page)
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

            verdicts = await self._c.idempotent(decide)
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

                await self._c.idempotent(unindex)
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

        run_ids = sorted({ORPHAN_RUN, *(await self._c.idempotent(find) if scan else ())})
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

            verdicts = await self._c.idempotent(decide)
            gone = [run_id for run_id, hit in zip(batch, verdicts, strict=True) if hit]
            if gone:

                async def uncount(gone: list[str] = gone) -> None:
                    await self._r.hdel(self.keys.journal_counts(), *gone)

                await self._c.idempotent(uncount)
                pruned.extend(gone)
        return pruned


_CHUNK = CHUNK_FIELD.encode()
_RECORD = RECORD_FIELD.encode()


def _records(counted: bytes | None, length: int) -> int:
    """A run's record count: counted by the write script, else one per entry (0.1)."""
    return int(counted) if counted is not None else int(length)


def _run_info(run_id: str, fields: dict[bytes, bytes], records: int) -> RunInfo:
    f = {_s(k): _s(v) for k, v in fields.items()}
    return RunInfo(
        run_id=run_id,
        name=f.get("name", ""),
        status=f.get("status", "unknown"),
        started=float(f.get("started", 0.0)),
        ended=float(f["ended"]) if f.get("ended") else None,
        events=int(f.get("events", 0)),
        records=int(records),
        tokens=int(f.get("tokens", 0)),
        meta=json.loads(f.get("meta", "{}")),
    )
