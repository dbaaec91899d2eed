"""The outbox of the Redis transport: how journal records reach their run on a cluster.

A write that changes a topic (publish, ack, dead letter, commit, dead-letter retry) and
carries journal records puts them, in the same atomic script or ``MULTI``, into that
topic's *outbox* stream (``keys.outbox(topic)``: the topic's hash slot). The records
belong to a run whose journal lives in another slot, perhaps on another master, so they
cannot be written there in the same step. :class:`Relay` copies them (in the background:
:mod:`.redis_relay`): per run,
:data:`JOURNAL_SCRIPT` on the run's slot appends the run's chunk to its journal with the
*origin* of the copy (``<outbox key>|<entry id>``) and adds to the run's counters; then the
outbox entry is deleted (``XDEL``, sent with the next write when one follows soon).

A crash between the steps leaves the entry in the outbox. :meth:`Relay.relay_pending`
(run at a runtime's start and by its maintenance step) relays every entry older than a
grace period again and deletes it. A copy may therefore happen twice (a crash after the
journal write, before the ``XDEL``); readers drop a chunk whose origin they have already
seen (:meth:`~agentbus.transports.redis_journal.RedisJournalStore.read_journal`); the
run's counters count it twice. The failure analysis is in ``docs/architecture.md``.

A de-duplicated handler's commit also puts its output *events* into the outbox; the
relay publishes each exactly once (:data:`EVENT_SCRIPT`: a marker ``keys.relayed(topic,
id)`` set with the ``XADD``, in the destination topic's slot).

Outbox entry fields: ``c`` the records, ``v`` the events. Each is a JSON header line and
the bodies back to back (so a repair copies the chunks byte for byte, signatures intact):
``c`` = ``[[run_id, records, events, tokens, length, published ms], …]\\n`` + chunks,
``v`` = ``[[topic, event_id, length], …]\\n`` + payloads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _json
from ..keys import Keys
from .base import EVENT_FIELD, JournalEntry
from .base import text as _s
from .chunks import chunk_by_run, encode_chunk

if TYPE_CHECKING:
    from ..signing import Signer
    from .redis_client import RedisClient

__all__ = [
    "CHUNK_FIELD",
    "EVENTS_FIELD",
    "JOURNAL_SCRIPT",
    "ORIGIN_FIELD",
    "OutboxEntry",
    "Relay",
    "RelayPlan",
    "Script",
    "run_scripts",
]

log = logging.getLogger("agentbus.runtime")

#: The journal stream field of a chunk (a JSON array of records); also the outbox's.
CHUNK_FIELD = "c"
#: The journal stream field naming the outbox entry a chunk was copied from.
ORIGIN_FIELD = "o"
#: The outbox field of a commit's output events.
EVENTS_FIELD = "v"
#: How long the marker of a relayed event lives: far beyond any repair's delay.
RELAYED_TTL_S = 7 * 86_400
_PAGE = 200

# KEYS: a run's journal stream, its hash. ARGV: records, tokens (added to the counters),
# then quadruples (chunk, origin or '' for a direct write, events, publish time in ms): a
# round's entries of one run, in its slot, in one call. Events published after the run's
# ``ended`` also count as ``late`` — by publish time, not relay time, so the reply a run
# waited for is never late however long its relay took.
JOURNAL_SCRIPT = f"""
local ended = redis.call('HGET', KEYS[2], 'ended')
local end_ms = ended and tonumber(ended) * 1000
local events, late = 0, 0
for i = 3, #ARGV, 4 do
  if ARGV[i + 1] == '' then
    redis.call('XADD', KEYS[1], '*', '{CHUNK_FIELD}', ARGV[i])
  else
    redis.call('XADD', KEYS[1], '*', '{CHUNK_FIELD}', ARGV[i], '{ORIGIN_FIELD}', ARGV[i + 1])
  end
  local n = tonumber(ARGV[i + 2])
  events = events + n
  if end_ms and n > 0 and tonumber(ARGV[i + 3]) > end_ms then late = late + n end
end
redis.call('HINCRBY', KEYS[2], 'records', ARGV[1])
if events > 0 then redis.call('HINCRBY', KEYS[2], 'events', events) end
if late > 0 then redis.call('HINCRBY', KEYS[2], 'late', late) end
if ARGV[2] ~= '0' then redis.call('HINCRBY', KEYS[2], 'tokens', ARGV[2]) end
return 1
"""

# KEYS: a topic stream, the relayed marker of the event. ARGV: payload, marker ttl.
# Publishes the event unless it was relayed before; XADD first, so that a refused write
# (out of memory) leaves no marker behind. Returns the entry id, or nil.
EVENT_SCRIPT = f"""
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local id = redis.call('XADD', KEYS[1], '*', '{EVENT_FIELD}', ARGV[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
return id
"""

# KEYS: the de-dup marker, the source topic stream, its outbox (one slot: the source
# topic's). ARGV: marker ttl, group, entry id, the outbox entry's records field, its
# events field ('' when empty). A dedupe=True commit as one script, which runs as a unit
# (what WATCH + MULTI gave, in one round trip): unless the marker exists, the handler's
# output events and records go into the outbox and the marker is set; the entry is
# acknowledged either way. Writes that may be refused for lack of memory come first, so
# a refusal leaves nothing half done. Returns nil when the marker existed, else the
# outbox entry's id ('' when there was nothing to put in it).
COMMIT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
  return false
end
local id = ''
if ARGV[4] ~= '' or ARGV[5] ~= '' then
  local fields = {}
  if ARGV[4] ~= '' then fields[#fields + 1] = 'c'; fields[#fields + 1] = ARGV[4] end
  if ARGV[5] ~= '' then fields[#fields + 1] = 'v'; fields[#fields + 1] = ARGV[5] end
  id = redis.call('XADD', KEYS[3], '*', unpack(fields))
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
return id
"""


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script run by ``EVALSHA`` in pipelines (reloaded after ``NOSCRIPT``)."""

    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> Script:
        import hashlib

        return cls(text, hashlib.sha1(text.encode()).hexdigest())


JOURNAL = Script.of(JOURNAL_SCRIPT)
EVENT = Script.of(EVENT_SCRIPT)


async def run_scripts(
    client: RedisClient,
    calls: Sequence[tuple[Script, Sequence[Any], Sequence[Any]]],
    unlinks: Sequence[tuple[str, list[str]]] = (),
    *,
    wait: bool = True,
) -> list[Any]:
    """Run script calls (``(script, keys, args)``) in one non-transactional pipeline.

    Each call's reply, or the exception it raised, in order. On a cluster redis-py
    splits the pipeline per master. A call answered ``NOSCRIPT`` (a restarted or
    failed-over Redis) did not run: the script is loaded and the call sent again.
    ``unlinks`` (outbox key, entry ids) are deleted in the same round trip; their
    replies are not returned (a failed one is retried by the caller's next batch or
    left to the repair).

    With ``?wait=N`` (and ``wait``, the default: pass ``False`` for calls that write
    nothing worth waiting for, such as reads) the calls go per master through
    :meth:`~.redis_client.RedisClient.run_in_slot`, concurrently, each pipeline followed
    by ``WAIT N`` on its connection: a call whose master's replicas did not acknowledge
    in time gets :class:`~agentbus.errors.TransportUnavailable` as its reply.
    """
    if wait and client.wait_replicas:
        return await _run_waited(client, calls, unlinks)
    async with client.r.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            _evalsha(pipe, script, keys, args)
        for key, ids in unlinks:
            pipe.xdel(key, *ids)
        results = list(await pipe.execute(raise_on_error=False))[: len(calls)]
    missing = [i for i, r in enumerate(results) if _no_script(r)]
    if missing:
        for script in {calls[i][0] for i in missing}:
            await client.r.script_load(script.text)  # every master on a cluster
        async with client.r.pipeline(transaction=False) as pipe:
            for i in missing:
                _evalsha(pipe, *calls[i])
            for i, r in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                results[i] = r
    return results


async def _run_waited(
    client: RedisClient,
    calls: Sequence[tuple[Script, Sequence[Any], Sequence[Any]]],
    unlinks: Sequence[tuple[str, list[str]]],
) -> list[Any]:
    """:func:`run_scripts` with ``?wait=N``: one pinned pipeline + ``WAIT`` per master."""
    results: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    pending_unlinks = list(unlinks)
    for attempt in (1, 2, 3):
        # Per master: its calls and deletions, one connection (WAIT counts the
        # replicas that acknowledged that connection's writes).
        nodes: dict[str, tuple[list[int], list[tuple[str, list[str]]]]] = {}
        for i in todo:
            node = await client.node_of(str(calls[i][1][0]))
            nodes.setdefault(node, ([], []))[0].append(i)
        for key, ids in pending_unlinks:
            nodes.setdefault(await client.node_of(key), ([], []))[1].append((key, ids))
        pending_unlinks = []

        async def send(mine: list[int], dels: list[tuple[str, list[str]]]) -> list[Any]:
            def build(pipe: Any) -> None:
                for i in mine:
                    _evalsha(pipe, *calls[i])
                for key, ids in dels:
                    pipe.xdel(key, *ids)

            first = str(calls[mine[0]][1][0]) if mine else dels[0][0]
            return await client.run_in_slot(first, build, transaction=False, raise_on_error=False)

        groups = list(nodes.values())
        replies = await asyncio.gather(*(send(*g) for g in groups), return_exceptions=True)
        for (mine, _), reply in zip(groups, replies, strict=True):
            for n, i in enumerate(mine):
                results[i] = reply if isinstance(reply, BaseException) else reply[n]
        # NOSCRIPT (a restarted Redis) and MOVED/ASK (a slot moved: nothing ran) are sent
        # again; MovedError is an AskError. Anything else is the call's outcome.
        retry_scripts = [i for i in todo if _no_script(results[i])]
        moved = [i for i in todo if type(results[i]).__name__ in ("AskError", "MovedError")]
        if retry_scripts:
            for script in {calls[i][0] for i in retry_scripts}:
                await client.r.script_load(script.text)
        if moved and client.cluster:
            await client.r.nodes_manager.initialize()
        todo = sorted(retry_scripts + moved)
        if not todo or attempt == 3:
            break
    return results


def _evalsha(pipe: Any, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> None:
    # execute_command, not pipe.evalsha: redis-py's cluster pipeline refuses evalsha()
    # (it cannot reload a script for you); run_scripts does, so it is safe here.
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


def _no_script(reply: Any) -> bool:
    """Whether a pipeline reply is redis-py's NoScriptError (without importing it)."""
    return isinstance(reply, Exception) and type(reply).__name__ == "NoScriptError"


@dataclass(slots=True)
class RunPart:
    """One run's chunk of an outbox entry, with what it adds to the run's counters."""

    run_id: str
    records: int
    events: int
    tokens: int
    chunk: bytes
    #: When the part's events were published (ms since the epoch; 0: not known, an entry
    #: written by an older version), to tell a run's late events from slow relays.
    at_ms: int = 0


@dataclass(slots=True)
class OutboxEntry:
    """What one outbox entry holds, to be relayed (``id`` known once written)."""

    key: str
    parts: list[RunPart] = field(default_factory=list)
    #: A commit's output events: (topic, event id, payload).
    events: list[tuple[str, str, bytes]] = field(default_factory=list)
    id: str = ""

    def fields(self) -> dict[str, bytes]:
        """The stream entry's fields (see the module docstring)."""
        out: dict[str, bytes] = {}
        if self.parts:
            out[CHUNK_FIELD] = encode_parts(self.parts)
        if self.events:
            head = _json.dumps([[t, i, len(p)] for t, i, p in self.events])
            out[EVENTS_FIELD] = head + b"\n" + b"".join(p for _, _, p in self.events)
        return out

    @property
    def origin(self) -> str:
        return f"{self.key}|{self.id}"


def parts_of(records: Sequence[JournalEntry], signer: Signer | None) -> list[RunPart]:
    """``records`` as one chunk per run (signed with ``signer``)."""
    now_ms = int(time.time() * 1000)
    return [
        RunPart(
            c.run_id, len(c.entries), c.events, c.tokens, encode_chunk(c.entries, signer), now_ms
        )
        for c in chunk_by_run(records)
    ]


def encode_parts(parts: Sequence[RunPart]) -> bytes:
    head = _json.dumps(
        [[p.run_id, p.records, p.events, p.tokens, len(p.chunk), p.at_ms] for p in parts]
    )
    return head + b"\n" + b"".join(p.chunk for p in parts)


def decode_entry(key: str, entry_id: str, fields: dict[bytes, bytes]) -> OutboxEntry:
    """An outbox entry read back (by the repair)."""
    entry = OutboxEntry(key, id=entry_id)
    raw = fields.get(CHUNK_FIELD.encode())
    if raw:
        head, _, body = raw.partition(b"\n")
        pos = 0
        for run_id, records, events, tokens, size, *at in _json.loads(head):
            chunk = body[pos : pos + size]
            entry.parts.append(RunPart(run_id, records, events, tokens, chunk, *at[:1]))
            pos += size
    raw = fields.get(EVENTS_FIELD.encode())
    if raw:
        head, _, body = raw.partition(b"\n")
        pos = 0
        for topic, event_id, size in _json.loads(head):
            entry.events.append((topic, event_id, body[pos : pos + size]))
            pos += size
    return entry


def _quad(part: RunPart, origin: str) -> tuple[bytes, str, int, int]:
    """A part's arguments to :data:`JOURNAL_SCRIPT` after the counters."""
    return part.chunk, origin, part.events, part.at_ms


@dataclass(slots=True)
class RelayPlan:
    """Script calls relaying outbox entries, and which calls are whose."""

    calls: list[tuple[Script, Sequence[Any], list[Any]]] = field(default_factory=list)
    #: Each entry and the calls that relay it (a run's call serves many entries).
    spans: list[tuple[OutboxEntry, list[int]]] = field(default_factory=list)


class Relay:
    """Copies outbox entries where they belong and deletes them (see the module docstring).

    One per transport. Deletions of relayed entries wait in :attr:`unlinks` for the next
    write's pipeline (:meth:`take_unlinks`), else go out on their own a moment later.
    """

    def __init__(self, client: RedisClient) -> None:
        self._c = client
        self.keys: Keys = client.keys
        self._unlinks: dict[str, list[str]] = {}
        self._flushing: asyncio.Task[None] | None = None

    def journal_call(self, part: RunPart, origin: str) -> tuple[Script, list[str], list[Any]]:
        """The :data:`JOURNAL_SCRIPT` call that writes ``part`` to its run."""
        keys = [self.keys.journal(part.run_id), self.keys.run(part.run_id)]
        return JOURNAL, keys, [part.records, part.tokens, *_quad(part, origin)]

    def plan(self, entries: Sequence[OutboxEntry]) -> RelayPlan:
        """The script calls that relay ``entries`` (to send in any pipeline): one
        :data:`JOURNAL_SCRIPT` call per run for all the entries' chunks of that run (each
        still its own journal entry with its origin), one :data:`EVENT_SCRIPT` call per
        event."""
        plan = RelayPlan()
        by_run: dict[str, int] = {}
        for entry in entries:
            mine: list[int] = []
            for topic, event_id, payload in entry.events:
                keys = [self.keys.topic(topic), self.keys.relayed(topic, event_id)]
                mine.append(len(plan.calls))
                plan.calls.append((EVENT, keys, [payload, RELAYED_TTL_S]))
            origin = entry.origin
            for part in entry.parts:
                i = by_run.get(part.run_id)
                if i is None:
                    by_run[part.run_id] = len(plan.calls)
                    plan.calls.append(self.journal_call(part, origin))
                else:
                    args = plan.calls[i][2]
                    args[0] += part.records
                    args[1] += part.tokens
                    args.extend(_quad(part, origin))
                mine.append(by_run[part.run_id])
            plan.spans.append((entry, mine))
        return plan

    def finish(self, plan: RelayPlan, results: Sequence[Any]) -> Exception | None:
        """Queue the deletion of the entries ``results`` (the replies to ``plan.calls``)
        show relayed; the first failure (its entry stays for the repair), else ``None``."""
        failure: Exception | None = None
        for entry, calls in plan.spans:
            errors = [results[i] for i in calls if isinstance(results[i], BaseException)]
            if errors:
                failure = failure or errors[0]
            else:
                self._unlinks.setdefault(entry.key, []).append(entry.id)
        self.schedule_flush()
        if failure is not None and isinstance(failure, self._c.redis_error):
            return self._c.translate(failure)
        return failure

    async def relay(self, entries: Sequence[OutboxEntry]) -> None:
        """Copy ``entries`` (events to their topics, chunks to their runs) in one round
        trip, then queue their deletion. Raises the first failure (a failed entry stays
        in the outbox for the repair; the others are deleted)."""
        plan = self.plan(entries)
        if not plan.calls:
            return
        unlinks = self.take_unlinks()
        try:
            results = await self._c.call(lambda: run_scripts(self._c, plan.calls, unlinks))
        except BaseException:
            self.restore(unlinks)  # not sent, or not known to be: try again later
            raise
        failure = self.finish(plan, results)
        if failure is not None:
            raise failure

    def take_unlinks(self) -> list[tuple[str, list[str]]]:
        """The pending deletions, handed to a pipeline about to be sent."""
        if not self._unlinks:
            return []
        taken, self._unlinks = self._unlinks, {}
        return list(taken.items())

    def restore(self, unlinks: Sequence[tuple[str, list[str]]]) -> None:
        """Put back deletions taken for a pipeline that was not (known to be) sent."""
        for key, ids in unlinks:
            self._unlinks.setdefault(key, []).extend(ids)

    def schedule_flush(self) -> None:
        """Delete what is pending soon, unless a write takes it first."""
        if self._unlinks and self._flushing is None and not self._c.closed:
            self._flushing = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            await asyncio.sleep(0)  # callers woken by the relay queue their next write first
            sent = await self.flush()
        finally:
            self._flushing = None
        # Deletions queued while this flush was in flight found it running and did not
        # schedule their own: without this they would wait for the next write (or the
        # repair) however long that is. Not after a failure: those wait for the next
        # write rather than retrying in a loop while Redis is away.
        if sent:
            self.schedule_flush()

    async def flush(self) -> bool:
        """Delete the relayed entries still pending now (best effort: an entry left
        behind is relayed again by the repair, and its copy dropped by readers).
        ``False`` if the deletion failed (the entries are kept pending)."""
        unlinks = self.take_unlinks()
        if not unlinks or self._c.closed:
            return True
        try:
            await run_scripts(self._c, [], unlinks)
        except Exception as exc:
            log.debug("deleting %d relayed outbox entries failed: %s", len(unlinks), exc)
            self.restore(unlinks)
            return False
        return True

    async def relay_pending(self, *, older_than: float) -> int:
        """Relay (again) every outbox entry written over ``older_than`` seconds ago and
        delete it; returns how many. The repair after a crash between an outbox write
        and its relay; safe to run from many processes at once (a copy made twice is
        dropped by readers). Scans every master on a cluster."""
        cutoff_ms = int((time.time() - older_than) * 1000)

        async def find() -> list[str]:
            found = self._c.r.scan_iter(match=self.keys.outbox_pattern(), count=500)
            return sorted({_s(key) async for key in found})

        relayed = 0
        for key in await self._c.idempotent(find):
            while True:

                async def page(key: str = key) -> Any:
                    return await self._c.r.xrange(key, min="-", max=str(cutoff_ms), count=_PAGE)

                rows = await self._c.idempotent(page)
                if not rows:
                    break
                entries = [decode_entry(key, _s(i), f) for i, f in rows]
                await self.relay(entries)
                await self.flush()
                relayed += len(entries)
                if len(rows) < _PAGE:
                    break
        if relayed:
            log.info("relayed %d outbox entries left behind (a writer stopped mid-way)", relayed)
        return relayed
