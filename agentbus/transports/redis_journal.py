"""The Redis side of the journal: run index, journal streams and the write scripts.

Kept apart from :mod:`agentbus.transports.redis` (the topic and consumer-group side) so
that each stays readable. :class:`RedisJournal` is a mixin of
:class:`~agentbus.transports.redis.RedisStreamsTransport`; it needs the transport's client
(``_r``), key builder and error-translating call helpers. Nothing here imports redis-py.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .. import _json
from ..keys import Keys
from .base import EVENT_FIELD, JournalEntry, JournalRecord, RunInfo, encode_chunk, tokens_of
from .base import text as _s

if TYPE_CHECKING:
    from ..signing import Signer

__all__ = ["CHUNK_FIELD", "PUBLISH_SCRIPT", "RECORD_FIELD", "RedisJournal", "publish_args"]

T = TypeVar("T")

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
local maxlen = ARGV[2]
local out = {{}}
for i = 1, n do
  local r
  if maxlen == '' then
    r = redis.pcall('XADD', KEYS[i], '*', '{EVENT_FIELD}', ARGV[2 + i])
  else
    r = redis.pcall('XADD', KEYS[i], 'MAXLEN', '~', maxlen, '*', '{EVENT_FIELD}', ARGV[2 + i])
  end
  if type(r) == 'table' and r.err then out[i] = '!' .. r.err else out[i] = r end
end
local a = 2 + n
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


def publish_args(
    keys: Keys,
    maxlen: int | None,
    items: Sequence[tuple[str, bytes]],
    journal: Sequence[JournalEntry],
    signer: Signer | None = None,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of :data:`PUBLISH_SCRIPT` for ``items`` and their journal records.

    ``signer`` signs the records (see :func:`~agentbus.transports.base.encode_chunk`).
    """
    script_keys = [keys.topic(topic) for topic, _ in items]
    args: list[Any] = [len(script_keys), "" if maxlen is None else maxlen]
    args.extend(payload for _, payload in items)
    by_run: dict[str, list[JournalEntry]] = {}
    counters: dict[tuple[str, str], int] = {}
    for entry in journal:
        bodies = by_run.get(entry.run_id)
        if bodies is None:
            bodies = by_run[entry.run_id] = []
        bodies.append(entry)
        kind = entry.record.get("kind")
        if kind == "published":
            key = (entry.run_id, "events")
            counters[key] = counters.get(key, 0) + 1
        elif kind == "model_call":
            spent = tokens_of(entry.record)
            if spent:
                key = (entry.run_id, "tokens")
                counters[key] = counters.get(key, 0) + spent
    args.append(len(by_run))
    for run_id, bodies in by_run.items():
        script_keys.append(keys.journal(run_id))
        args.extend((run_id, len(bodies), encode_chunk(bodies, signer)))
    args.append(len(counters))
    for (run_id, field), amount in counters.items():
        script_keys.append(keys.run(run_id))
        args.extend((field, amount))
    script_keys.append(keys.journal_counts())
    return script_keys, args


class RedisJournal:
    """Runs and journal records on Redis (a mixin of the Redis transport)."""

    keys: Keys
    _r: Any
    #: Signs every journal record written (set by a :class:`~agentbus.Runtime` with a signer).
    journal_signer: Signer | None = None

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def _idempotent(self, fn: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
        raise NotImplementedError

    # -- journal in pipelines -------------------------------------------------------------
    def _queue_journal(self, pipe: Any, journal: Sequence[JournalEntry]) -> None:
        """Queue journal records (and their run counters) on ``pipe`` as one script call.

        The same script as a publish, with no events: redis-py spends far more client CPU
        packing and parsing a command than Redis spends running it, so one EVAL beats an
        XADD per record. Same entries, same order per run.
        """
        if not journal:
            return
        keys, args = publish_args(self.keys, None, (), journal, self.journal_signer)
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

        await self._idempotent(go)

    async def write_journal(self, journal: Sequence[JournalEntry]) -> None:
        if not journal:
            return

        async def run() -> None:
            async with self._r.pipeline(transaction=True) as pipe:
                self._queue_journal(pipe, journal)
                await pipe.execute()

        await self._call(run)

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

        return await self._idempotent(run)

    async def get_run(self, run_id: str) -> RunInfo | None:
        async def run() -> RunInfo | None:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.run(run_id))
                pipe.hget(self.keys.journal_counts(), run_id)
                pipe.xlen(self.keys.journal(run_id))
                fields, counted, length = await pipe.execute()
            return _run_info(run_id, fields, _records(counted, length)) if fields else None

        return await self._idempotent(run)

    async def read_journal(self, run_id: str) -> list[JournalRecord]:
        key = self.keys.journal(run_id)
        out: list[JournalRecord] = []
        start = "-"
        while True:
            page_start = start
            rows: list[Any] = await self._idempotent(
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
