"""The Redis side of the journal: journal streams and the write scripts (runs: redis_runs).

:class:`RedisJournalStore` is the Redis transport's ``store``; it runs its commands
through the shared :class:`~agentbus.transports.redis_client.RedisClient`. The broker
(:mod:`agentbus.transports.redis`) puts a call's records into a topic's outbox
(:meth:`RedisJournalStore.outbox`, :meth:`RedisJournalStore.queue`, or for publishes
:func:`publish_args`); :mod:`.redis_outbox` copies them to the runs. Nothing here imports
redis-py.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from .. import _json
from ..keys import Keys
from .base import EVENT_FIELD, JournalEntry, JournalRecord, Question, Reservation, RunInfo
from .base import text as _s
from .redis_outbox import (
    CHUNK_FIELD,
    ORIGIN_FIELD,
    OutboxEntry,
    Relay,
    Script,
    parts_of,
    run_scripts,
)
from .redis_questions import RedisQuestions
from .redis_relay import RelayQueue
from .redis_runs import RedisRuns
from .run_query import RunFilter, scan_filtered

if TYPE_CHECKING:
    from ..signing import Signer
    from .redis_client import RedisClient

__all__ = [
    "CHUNK_FIELD",
    "PUBLISH",
    "PUBLISH_SCRIPT",
    "RECORD_FIELD",
    "RedisJournalStore",
    "publish_args",
]


#: The field of an entry holding one record (journals written by agentbus 0.1).
RECORD_FIELD = "r"

# A group commit's script call for the publishes of one hash slot (the topics of one
# call share a slot: see redis.py). KEYS: the topic stream of each event, then, when the
# publishes carry journal records, the outbox of the first topic. ARGV: the number of
# events, their payloads, then the outbox entry's records field.
#
# A failed event XADD is reported per event (a "!"-prefixed error) so each caller sees
# its own outcome. The ids (and last the outbox entry's id) come back as one
# newline-separated string (none can contain a newline): redis-py parses one reply
# instead of one per event, which is most of what a reply costs it. The records land in
# the outbox atomically with the events (scripts run as a unit); the relay copies them
# to their runs' journals at once (redis_outbox).
PUBLISH_SCRIPT = f"""
local n = tonumber(ARGV[1])
local out = {{}}
for i = 1, n do
  local r = redis.pcall('XADD', KEYS[i], '*', '{EVENT_FIELD}', ARGV[1 + i])
  if type(r) == 'table' and r.err then out[i] = '!' .. r.err else out[i] = r end
end
if #KEYS > n then
  out[n + 1] = redis.call('XADD', KEYS[n + 1], '*', '{CHUNK_FIELD}', ARGV[n + 2])
end
return table.concat(out, '\\n')
"""
PUBLISH = Script.of(PUBLISH_SCRIPT)


def publish_args(
    keys: Keys, items: Sequence[tuple[str, bytes]], outbox: OutboxEntry | None
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of :data:`PUBLISH_SCRIPT` for ``items`` (topics of one slot) and
    the outbox entry of their journal records (``None``: no records)."""
    script_keys = [keys.topic(topic) for topic, _ in items]
    args: list[Any] = [len(script_keys)]
    args.extend(payload for _, payload in items)
    if outbox is not None:
        script_keys.append(outbox.key)
        args.append(outbox.fields()[CHUNK_FIELD])
    return script_keys, args


class RedisJournalStore:
    """Runs and journal records on Redis (a transport's ``store``)."""

    #: Signs every journal record written (set by a :class:`~agentbus.Runtime` with a signer).
    signer: Signer | None = None

    def __init__(self, client: RedisClient) -> None:
        self._c = client
        self.keys: Keys = client.keys
        self._runs = RedisRuns(client)
        self._questions = RedisQuestions(client)
        self._relay = Relay(client)
        self._queue = RelayQueue(client, self._relay)

    @property
    def _r(self) -> Any:
        return self._c.r

    @property
    def relay(self) -> Relay:
        """The outbox relay (shared with the broker and the admin)."""
        return self._relay

    @property
    def relay_queue(self) -> RelayQueue:
        """Written outbox entries waiting to be copied (shared by every write)."""
        return self._queue

    async def settle(self) -> None:
        """Wait until the records of the writes made so far are in their runs' journals
        (copied from the outbox in the background: :mod:`.redis_relay`)."""
        await self._queue.settle()

    def outbox(self, topic: str, records: Sequence[JournalEntry]) -> OutboxEntry | None:
        """``records`` as an entry for ``topic``'s outbox (signed); ``None`` without any."""
        if not records:
            return None
        return OutboxEntry(self.keys.outbox(topic), parts_of(records, self.signer))

    def queue(self, pipe: Any, entry: OutboxEntry | None) -> None:
        """Queue the ``XADD`` of an outbox entry on ``pipe`` (a ``MULTI`` in the entry's
        topic slot: how acks, dead letters and retries write their records)."""
        if entry is not None:
            pipe.xadd(entry.key, entry.fields())

    async def relay_pending(self, *, older_than: float) -> int:
        return await self._relay.relay_pending(older_than=older_than)

    # -- runs: the index half, in redis_runs ----------------------------------------------------
    async def save_run(self, run: RunInfo) -> None:
        await self._runs.save_run(run)

    async def list_runs(self, *, limit: int = 100, where: RunFilter | None = None) -> list[RunInfo]:
        await self._queue.settle()  # this process's writes are counted when it reads
        if where is None or where.empty:
            return await self._runs.list_runs(limit=limit)
        # The start time bounds the index scan (its score); name and status are checked
        # on each run's hash, agent and type on its records.
        return await scan_filtered(
            partial(self._runs.newest, since=where.since, until=where.until),
            where,
            self.read_journal,
            limit=limit,
        )

    async def get_run(self, run_id: str) -> RunInfo | None:
        await self._queue.settle()
        return await self._runs.get_run(run_id)

    async def prune_runs(self, *, before: float) -> list[str]:
        return await self._runs.prune_runs(before=before)

    async def reserve(
        self, run_id: str, amounts: Mapping[str, float], limits: Mapping[str, float]
    ) -> Reservation:
        return await self._runs.reserve(run_id, amounts, limits)

    async def journal_mark(self, run_id: str) -> str | None:
        # This process's records still queued for the relay are copied first, so that
        # they count (another process's outbox entries count once relayed).
        await self._queue.settle()
        return await self._runs.journal_mark(run_id)

    async def drop_run(self, run_id: str, *, mark: str) -> bool:
        # Copy this process's queued records first: one copied after the deletion would
        # start the run's journal again, and the check would not have seen it.
        await self._queue.settle()
        return await self._runs.drop_run(run_id, mark=mark)

    # -- questions: the run's slot and the {questions} indexes, in redis_questions ----------
    async def open_question(self, question: Question) -> tuple[Question, bool]:
        return await self._questions.open(question)

    async def get_question(self, run_id: str, question_id: str) -> Question | None:
        return await self._questions.get(run_id, question_id)

    async def list_questions(self, *, run_id: str | None = None) -> list[Question]:
        return await self._questions.list_open(run_id)

    async def answer_question(
        self, run_id: str, question_id: str, answer: Any, *, by: str, now: float
    ) -> tuple[bool, Question | None]:
        return await self._questions.answer(run_id, question_id, answer, by, now)

    async def withdraw_questions(self, run_id: str, *, by: str, now: float) -> list[Question]:
        return await self._questions.withdraw(run_id, by, now)

    async def claim_questions(
        self, agents: Sequence[str], *, now: float, grace: float, limit: int = 100
    ) -> list[Question]:
        return await self._questions.claim(agents, now, grace, limit)

    async def resumed_question(self, question: Question) -> bool:
        return await self._questions.resumed(question, time.time())

    # -- journal --------------------------------------------------------------------------------
    async def write_journal(self, records: Sequence[JournalEntry]) -> None:
        # Records not tied to a topic write go straight to their runs: one script per
        # run, in the run's slot, all in one round trip.
        if not records:
            return
        relay = self._relay
        calls = [relay.journal_call(part, "") for part in parts_of(records, self.signer)]

        async def run() -> None:
            for result in await run_scripts(self._c, calls):
                if isinstance(result, Exception):
                    raise result

        await self._c.call(run)

    async def read_journal(self, run_id: str) -> list[JournalRecord]:
        await self._queue.settle()  # this process's writes are read back (read-after-write)
        key = self.keys.journal(run_id)
        # (when it happened in ms, the chunk's records), in journal order.
        chunks: list[tuple[int, list[JournalRecord]]] = []
        # A chunk copied from an outbox twice (a relay interrupted after the copy, then
        # repaired) is read once: its origin names the outbox entry it came from.
        seen: set[bytes] = set()
        start = "-"
        while True:
            page_start = start
            rows: list[Any] = await self._c.idempotent(
                lambda: self._r.xrange(key, min=page_start, count=10_000)  # noqa: B023
            )
            for raw_id, fields in rows:
                entry_id = _s(raw_id)
                when = _ms(entry_id)
                chunk = fields.get(_CHUNK)
                if chunk is not None:
                    origin = fields.get(_ORIGIN)
                    if origin is not None:
                        if origin in seen:
                            continue
                        seen.add(origin)
                        when = _ms(_s(origin).rpartition("|")[2])
                    chunks.append(
                        (
                            when,
                            [
                                JournalRecord(seq=f"{entry_id}:{i}", run_id=run_id, record=rec)
                                for i, rec in enumerate(_json.loads(chunk))
                            ],
                        )
                    )
                else:  # one record per entry (agentbus 0.1)
                    record = _json.loads(fields[_RECORD])
                    chunks.append(
                        (when, [JournalRecord(seq=entry_id, run_id=run_id, record=record)])
                    )
            if len(rows) < 10_000:
                break
            start = "(" + _s(rows[-1][0])
        # A relayed chunk took effect when its outbox entry was written, with the events
        # or acks it records; its copy reaches the journal a moment later (much later
        # after a repair), possibly after the records of a consumer that already handled
        # those events. Ordered by when they took effect (within a millisecond, by their
        # first records' times when all have one, else in journal order), a run reads in
        # causal order: "published" before "delivered".
        chunks.sort(key=lambda c: c[0])
        out: list[JournalRecord] = []
        for _, group in itertools.groupby(chunks, key=lambda c: c[0]):
            same_ms = [records for _, records in group]
            times = [_time(records) for records in same_ms]
            if len(same_ms) > 1 and all(t is not None for t in times):
                ordered = sorted(zip(times, same_ms, strict=True), key=lambda x: x[0] or 0.0)
                same_ms = [records for _, records in ordered]
            out.extend(r for records in same_ms for r in records)
        return out


def _time(records: list[JournalRecord]) -> float | None:
    """When the first of a chunk's records was made (``None`` when it does not say)."""
    t = records[0].record.get("time") if records else None
    return t if isinstance(t, int | float) else None


def _ms(entry_id: str) -> int:
    """The millisecond time of a stream entry id (0 when it is not one)."""
    ms, _, _ = entry_id.partition("-")
    return int(ms) if ms.isdigit() else 0


_CHUNK = CHUNK_FIELD.encode()
_ORIGIN = ORIGIN_FIELD.encode()
_RECORD = RECORD_FIELD.encode()
