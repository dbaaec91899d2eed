"""The Redis Streams transport (redis.asyncio): the broker, composed with its roles.

Layout (all under the key prefix, see :mod:`agentbus.keys`): a stream per topic with
one field ``e`` holding the envelope; a dead-letter stream per topic; a journal stream
per run plus a hash per run and a sorted set indexing runs.

:class:`RedisStreamsTransport` is the broker (publish, read, ack, commit, claim: the
hot path); its ``store`` (:mod:`.redis_journal`) and ``admin`` (:mod:`.redis_admin`)
share its connection (:mod:`.redis_client`, which explains the two pools and why only
idempotent commands are retried). A publish that returned has been applied.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.crc import key_slot
from redis.exceptions import ResponseError

from ..errors import UsageError
from ..keys import Keys
from .base import EVENT_FIELD, Ack, Delivery, EntryState, JournalEntry, entry_id_key
from .base import text as _s
from .redis_admin import LETTER_FIELD, RedisAdmin
from .redis_client import RedisClient
from .redis_journal import RedisJournalStore
from .redis_outbox import COMMIT_SCRIPT, OutboxEntry
from .redis_partitions import RedisPartitions
from .redis_publish import GroupCommit
from .redis_reads import READ_SCRIPT, SlotReads, blocking_read, unpack_read

__all__ = ["RedisStreamsTransport"]

log = logging.getLogger("agentbus.runtime")

MAX_BLOCK_MS = 10_000

_EVENT_KEY = EVENT_FIELD.encode()


@dataclass(slots=True)
class _AckSlot:
    """What one ``ack`` call writes in one hash slot."""

    key: str  #: a key of the slot (routes the call)
    topic: str | None = None  #: a topic of the slot, if it has acks (names its outbox)
    acks: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    marks: list[tuple[str, int]] = field(default_factory=list)
    outbox: OutboxEntry | None = None

    def commands(self) -> int:
        return len(self.acks) + len(self.marks) + (self.outbox is not None)


class RedisStreamsTransport(RedisPartitions):
    """Topics as Redis streams. ``url`` is ``redis://``, ``rediss://`` or ``unix://``.

    ``prefix`` (or ``?prefix=`` in the URL) namespaces every key.
    ``connect_timeout`` bounds how long :meth:`connect` waits for Redis to answer.
    Each of its two connection pools holds up to ``?max_connections=`` (redis-py's
    default: 100) connections; a hosted subscription holds one blocking connection.

    Topics are trimmed by ``admin.trim_acknowledged`` (the runtime's maintenance step),
    never capped: ``stream_maxlen`` is refused with :class:`UsageError`.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str | None = None,
        connect_timeout: float = 5.0,
        socket_timeout: float = 10.0,
        stream_maxlen: int | None = None,
    ) -> None:
        if stream_maxlen is not None:
            # A length cap trims entries whether or not they were delivered: it lost
            # most of a backlog without a word. Retention is trim_acknowledged now.
            raise UsageError(
                f"stream_maxlen is no longer supported (got {stream_maxlen!r}): a length cap "
                "deletes events no consumer has handled. Topics are trimmed automatically "
                "below what every consumer group has acknowledged (Runtime(retention=...))"
            )
        self._c = RedisClient(
            url, prefix=prefix, connect_timeout=connect_timeout, socket_timeout=socket_timeout
        )
        self.url = self._c.url
        self.keys: Keys = self._c.keys
        self.connect_timeout = connect_timeout
        self.store = RedisJournalStore(self._c)
        self.admin = RedisAdmin(self._c, self.store)
        self._r: Any = self._c.r
        # The client's helpers, bound once: the hot path calls them as before.
        self._call = self._c.call
        self._idempotent = self._c.idempotent
        # EVALSHA with a transparent reload after NOSCRIPT (e.g. a restarted Redis).
        self._read_script = self._r.register_script(READ_SCRIPT)
        #: Per (group, consumer): did its last read find a backlog? (see read_group)
        self._busy: dict[tuple[str, str], bool] = {}
        self._relay = self.store.relay
        self._relay_queue = self.store.relay_queue
        self._slot_reads = SlotReads(self._c, self.keys.topic_name, self._deliveries)
        #: The hash slot of each topic's keys (computed once per topic).
        self._slots: dict[str, int] = {}
        # Group commit of publishes (redis_publish).
        self._commits = GroupCommit(self._c, self.store, self._slot)

    # -- lifecycle -----------------------------------------------------------------------
    async def connect(self) -> None:
        """Wait (bounded by ``connect_timeout``) for Redis to answer ``PING``."""
        await self._c.connect()

    async def aclose(self) -> None:
        if not self._c.closed:
            await self._slot_reads.aclose()
            try:  # copies still queued, and relayed outbox entries not deleted yet (else
                # the repair copies them again)
                await self._relay_queue.aclose(timeout=2.0)
                await asyncio.wait_for(self._relay.flush(), timeout=1.0)
            except Exception as exc:
                log.debug("deleting relayed outbox entries on close failed: %s", exc)
        await self._c.aclose()

    async def __aenter__(self) -> RedisStreamsTransport:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- topics ---------------------------------------------------------------------------
    def _slot(self, topic: str) -> int:
        """The hash slot of ``topic``'s keys (its stream, outbox, dead letters, markers)."""
        slot = self._slots.get(topic)
        if slot is None:
            slot = key_slot(self.keys.topic(topic).encode())
            if len(self._slots) < 10_000:
                self._slots[topic] = slot
        return slot

    async def publish(
        self, topic: str, payload: bytes, *, records: Sequence[JournalEntry] = ()
    ) -> str:
        return (await self.publish_many([(topic, payload)], records=records))[0]

    async def publish_many(
        self, items: Sequence[tuple[str, bytes]], *, records: Sequence[JournalEntry] = ()
    ) -> list[str]:
        return await self._commits.publish_many(items, records)

    async def create_group(self, topic: str, group: str, *, from_start: bool = True) -> None:
        async def run() -> None:
            try:
                await self._r.xgroup_create(
                    self.keys.topic(topic), group, id="0" if from_start else "$", mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

        await self._idempotent(run)

    async def delete_group(self, topic: str, group: str) -> None:
        async def run() -> None:
            try:
                await self._r.xgroup_destroy(self.keys.topic(topic), group)
            except ResponseError:
                pass  # no such key or group: already gone

        await self._idempotent(run)
        # Broadcast groups come and go with agent instances: forget their read state.
        for reader in [r for r in self._busy if r[0] == group]:
            del self._busy[reader]
        self._slot_reads.forget(group)

    def _deliveries(self, response: Any, counts: dict[str, int] | None = None) -> list[Delivery]:
        out: list[Delivery] = []
        for key, entries in response or []:
            topic = self.keys.topic_name(_s(key))
            for raw_id, fields in entries:
                if fields is None:  # trimmed or deleted while pending
                    continue
                entry_id = raw_id.decode()
                out.append(
                    Delivery(
                        topic,
                        entry_id,
                        fields.get(_EVENT_KEY),
                        None,
                        1 if counts is None else counts.get(entry_id, 1),
                        raw_fields=fields,  # names decoded only if a dead letter needs them
                    )
                )
        return out

    async def _counts(
        self, topic: str, group: str, consumer: str | None, ids: list[str]
    ) -> dict[str, int]:
        if not ids:
            return {}
        rows = await self._r.xpending_range(
            self.keys.topic(topic),
            group,
            min=ids[0],
            max=ids[-1],
            count=len(ids) * 2 + 10,
            consumername=consumer,
        )
        return {_s(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def read_group(
        self,
        group: str,
        consumer: str,
        topics: Sequence[str],
        *,
        count: int,
        block_ms: int | None,
        pending: bool = False,
    ) -> list[Delivery]:
        if pending:
            # The consumer's own pending entries, topic by topic (one slot per command).
            async def history() -> list[Delivery]:
                out = []
                for topic in topics:
                    key = self.keys.topic(topic)
                    response = await self._r.xreadgroup(group, consumer, {key: "0"}, count=count)
                    for _, entries in response or []:
                        ids = [_s(i) for i, _ in entries]
                        counts = await self._counts(topic, group, consumer, ids)
                        out.extend(self._deliveries([(key, entries)], counts))
                        # Entries deleted while pending come back without fields: ack them.
                        gone = [i for i, f in entries if f is None]
                        if gone:
                            await self._r.xack(key, group, *gone)
                return out

            return await self._idempotent(history)
        block = _block(block_ms)
        by_slot: dict[int, list[str]] = {}
        for t in topics:
            by_slot.setdefault(self._slot(t), []).append(self.keys.topic(t))
        if len(by_slot) > 1 or self._slot_reads.in_flight(group, consumer):  # see SlotReads
            return await self._slot_reads.read(
                group, consumer, list(by_slot.values()), count=count, block=block
            )
        keys = [self.keys.topic(t) for t in topics]
        streams = dict.fromkeys(keys, ">")
        reader = (group, consumer)

        async def read() -> list[Delivery]:
            # What is waiting comes packed in one reply (see redis_reads); only when
            # nothing is, block the usual way. A reader whose last read found at most one
            # entry is at idle or nearly: it blocks at once, sparing a round trip.
            if self._busy.get(reader, True):
                packed = await self._read_script(keys=keys, args=[group, consumer, count])
                if packed:
                    out = unpack_read(packed, self.keys.topic_name)
                    self._busy[reader] = len(out) > 1
                    return out
            response = await blocking_read(self._c, streams, count=count, block=block, group=reader)
            out = self._deliveries(response)
            self._busy[reader] = len(out) > 1
            return out

        return await self._call(read)

    def reads_in_flight(self, group: str, consumer: str) -> set[str]:
        return self._slot_reads.in_flight(group, consumer)

    async def ack(
        self,
        acks: Sequence[Ack],
        *,
        records: Sequence[JournalEntry] = (),
        mark: Sequence[tuple[str, int]] = (),
    ) -> None:
        if not acks and not mark:
            await self.store.write_journal(records)  # nothing in a topic's slot to go with
            return
        # Per hash slot: its acks and its de-dup markers (tagged by the topic read from,
        # so they share its slot), one call each, concurrently.
        slots: dict[int, _AckSlot] = {}
        for a in acks:
            slot = self._slot(a.topic)
            s = slots.get(slot)
            if s is None:
                s = slots[slot] = _AckSlot(self.keys.topic(a.topic), a.topic)
            s.acks.setdefault((a.topic, a.group), []).append(a.entry_id)
        for key, ttl in mark:
            slot = key_slot(key.encode())
            s = slots.get(slot)
            if s is None:
                s = slots[slot] = _AckSlot(key)
            s.marks.append((key, ttl))
        # The records go into the outbox of one slot, atomically with that slot's acks.
        # The other slots' acks are separate calls, not atomic with them: an ack that
        # fails there is retried or its entry delivered again (at-least-once, as for any
        # ack), and its outcome record was already written here.
        outbox: OutboxEntry | None = None
        carrier = next((s for s in slots.values() if s.topic is not None), None)
        if records and carrier is not None and carrier.topic is not None:
            outbox = carrier.outbox = self.store.outbox(carrier.topic, records)

        def build(s: _AckSlot) -> Any:
            # MULTI/EXEC only when there is more than one command to keep together: acks
            # alone need none, and Redis out of memory refuses any MULTI but still takes
            # XACKs, which is how the writer acks while journal writes are refused.
            def queue(pipe: Any) -> None:
                self.store.queue(pipe, s.outbox)
                for key, ttl in s.marks:
                    pipe.set(key, b"1", ex=ttl)
                for (topic, group), ids in s.acks.items():
                    pipe.xack(self.keys.topic(topic), group, *ids)

            atomic = (s.outbox is not None or bool(s.marks)) and s.commands() > 1
            return self._c.run_in_slot(s.key, queue, transaction=atomic)

        async def run() -> None:
            results = await asyncio.gather(*(build(s) for s in slots.values()))
            if outbox is not None and carrier is not None:
                outbox.id = _s(results[list(slots.values()).index(carrier)][0])

        # Retrying is safe only without journal records (they would be written twice).
        if outbox is not None:
            await self._call(run)
            self._relay_queue.submit([outbox])
        else:
            await self._idempotent(run)
            if records:  # acks of no topic (markers only): the records go on their own
                await self.store.write_journal(records)

    async def commit(
        self,
        ack: Ack,
        mark: tuple[str, int],
        *,
        publish: Sequence[tuple[str, bytes]] = (),
        records: Sequence[JournalEntry] = (),
    ) -> bool:
        key, ttl = mark
        stream = self.keys.topic(ack.topic)
        # The outputs and records wait in the source topic's outbox (its slot, with the
        # marker and the ack); the relay publishes each output once (a marker per event
        # id in the destination slot) and journals the records.
        entry = self.store.outbox(ack.topic, records) or OutboxEntry(self.keys.outbox(ack.topic))
        entry.events = [
            (item[0], str(item[2]) if len(item) > 2 else os.urandom(12).hex(), item[1])
            for item in publish
        ]
        fields = entry.fields()
        args = [ttl, ack.group, ack.entry_id, fields.get("c", b""), fields.get("v", b"")]

        def queue(pipe: Any) -> None:
            pipe.eval(COMMIT_SCRIPT, 3, key, stream, entry.key, *args)

        # Retrying is safe: a commit whose reply was lost left the marker behind (and its
        # outbox entry, which the repair relays).
        (result,) = await self._idempotent(
            lambda: self._c.run_in_slot(stream, queue, transaction=False)
        )
        if result is None:
            return False
        if result:
            entry.id = _s(result)
            self._relay_queue.submit([entry])
        return True

    async def claim_idle(
        self,
        topic: str,
        group: str,
        consumer: str,
        *,
        min_idle_ms: int,
        count: int,
        cursor: str = "0-0",
    ) -> tuple[str, list[Delivery]]:
        key = self.keys.topic(topic)

        async def run() -> tuple[str, list[Delivery]]:
            response = await self._r.xautoclaim(
                key, group, consumer, min_idle_ms, cursor, count=count
            )
            next_cursor, entries = _s(response[0]), response[1]
            ids = [_s(i) for i, _ in entries]
            counts = await self._counts(topic, group, consumer, sorted(ids, key=entry_id_key))
            return next_cursor, self._deliveries([(key, entries)], counts)

        return await self._idempotent(run)

    async def extend_lease(
        self, topic: str, group: str, consumer: str, entry_ids: Sequence[str]
    ) -> None:
        if not entry_ids:
            return
        key = self.keys.topic(topic)
        await self._idempotent(
            lambda: self._r.xclaim(key, group, consumer, 0, list(entry_ids), justid=True)
        )

    async def read_tail(
        self, topic: str, after: str, *, count: int, block_ms: int | None
    ) -> list[Delivery]:
        block = _block(block_ms)
        key = self.keys.topic(topic)

        async def run() -> list[Delivery]:
            return self._deliveries(
                await blocking_read(self._c, {key: after}, count=count, block=block)
            )

        return await self._call(run)

    async def delete_topic(self, topic: str) -> None:
        await self._idempotent(lambda: self._r.delete(self.keys.topic(topic)))

    async def entry_state(self, topic: str, entry_id: str) -> list[EntryState]:
        key = self.keys.topic(topic)
        wanted = entry_id_key(entry_id)

        async def run() -> list[EntryState]:
            if not await self._r.exists(key):
                return []
            groups = await self._r.xinfo_groups(key)
            out = []
            for g in sorted(groups, key=lambda g: _s(g["name"])):
                name = _s(g["name"])
                rows = await self._r.xpending_range(key, name, entry_id, entry_id, 1)
                if rows:
                    row = rows[0]
                    out.append(
                        EntryState(
                            name,
                            True,
                            _s(row["consumer"]),
                            int(row["time_since_delivered"]),
                            int(row["times_delivered"]),
                        )
                    )
                else:
                    out.append(EntryState(name, entry_id_key(_s(g["last-delivered-id"])) >= wanted))
            return out

        return await self._idempotent(run)

    # -- dead letters -----------------------------------------------------------------------
    async def dead_letter(
        self,
        topic: str,
        group: str,
        entry_id: str,
        letter: dict[str, Any],
        *,
        records: Sequence[JournalEntry] = (),
    ) -> None:
        # The dead letters, the topic and its outbox share the topic's slot: one MULTI.
        outbox = self.store.outbox(topic, records)
        stream = self.keys.topic(topic)

        def queue(pipe: Any) -> None:
            pipe.xadd(self.keys.dead_letters(topic), {LETTER_FIELD: json.dumps(letter)})
            pipe.xack(stream, group, entry_id)
            self.store.queue(pipe, outbox)

        results = await self._call(lambda: self._c.run_in_slot(stream, queue, transaction=True))
        if outbox is not None:
            outbox.id = _s(results[-1])
            self._relay_queue.submit([outbox])

    async def is_marked(self, key: str) -> bool:
        return bool(await self._idempotent(lambda: self._r.exists(key)))


def _block(block_ms: int | None) -> int | None:
    # BLOCK 0 means "forever" to Redis, but "wait up to 0 ms" in the transport contract
    # (and would trip the socket timeout): don't block at all, as the memory transport.
    return None if block_ms is None or block_ms <= 0 else min(block_ms, MAX_BLOCK_MS)
