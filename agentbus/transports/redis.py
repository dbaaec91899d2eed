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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError, ResponseError, WatchError

from ..errors import TransportClosed, TransportError, UsageError
from ..keys import Keys
from .base import EVENT_FIELD, Ack, Delivery, EntryState, JournalEntry, entry_id_key
from .base import text as _s
from .redis_admin import LETTER_FIELD, RedisAdmin
from .redis_client import RedisClient
from .redis_journal import PUBLISH_SCRIPT, RedisJournalStore, publish_args
from .redis_reads import READ_SCRIPT, unpack_read

__all__ = ["RedisStreamsTransport"]

MAX_BLOCK_MS = 10_000


_EVENT_KEY = EVENT_FIELD.encode()


@dataclass(slots=True)
class _Publish:
    """A publish waiting for its group commit."""

    items: Sequence[tuple[str, bytes]]
    records: Sequence[JournalEntry]
    done: asyncio.Future[list[str]]


class RedisStreamsTransport:
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
        self._blocking: Any = self._c.blocking
        # The client's helpers, bound once: the hot path calls them as before.
        self._call = self._c.call
        self._idempotent = self._c.idempotent
        # Group commit of publishes: see publish_many.
        self._queued: list[_Publish] = []
        self._writing: asyncio.Task[None] | None = None
        # EVALSHA with a transparent reload after NOSCRIPT (e.g. a restarted Redis).
        self._publish_script = self._r.register_script(PUBLISH_SCRIPT)
        self._read_script = self._r.register_script(READ_SCRIPT)
        #: Per (group, consumer): did its last read find a backlog? (see read_group)
        self._busy: dict[tuple[str, str], bool] = {}

    # -- lifecycle -----------------------------------------------------------------------
    async def connect(self) -> None:
        """Wait (bounded by ``connect_timeout``) for Redis to answer ``PING``."""
        await self._c.connect()

    async def aclose(self) -> None:
        await self._c.aclose()

    async def __aenter__(self) -> RedisStreamsTransport:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- topics ---------------------------------------------------------------------------
    def _xadd(self, pipe: Any, topic: str, payload: bytes) -> None:
        pipe.xadd(self.keys.topic(topic), {EVENT_FIELD: payload})

    async def publish(
        self, topic: str, payload: bytes, *, records: Sequence[JournalEntry] = ()
    ) -> str:
        return (await self.publish_many([(topic, payload)], records=records))[0]

    async def publish_many(
        self, items: Sequence[tuple[str, bytes]], *, records: Sequence[JournalEntry] = ()
    ) -> list[str]:
        # Group commit: a round trip costs far more than the commands in it, so publishes
        # made while another is being written wait and go out together in the next
        # MULTI/EXEC. A lone publisher is written at once; each publish still lands with
        # its journal records, and each caller sees only its own errors.
        self._c.check()
        pending = _Publish(items, records, asyncio.get_running_loop().create_future())
        self._queued.append(pending)
        if self._writing is None:
            self._writing = asyncio.get_running_loop().create_task(self._write_queued())
        return await pending.done

    async def _write_queued(self) -> None:
        batch: list[_Publish] = []
        try:
            while self._queued:
                # Publishes whose caller was cancelled before they were sent are dropped.
                batch = [p for p in self._queued if not p.done.done()]
                self._queued = []
                if batch:
                    await self._write_batch(batch)
                batch = []
        except BaseException:  # cancelled with the loop: fail the waiters, never hang them
            closed = TransportClosed(f"the Redis transport for {self.url!r} stopped publishing")
            for p in batch + self._queued:
                if not p.done.done():
                    p.done.set_exception(closed)
            self._queued = []
            raise
        finally:
            self._writing = None

    async def _write_batch(self, batch: list[_Publish]) -> None:
        records = [entry for p in batch for entry in p.records]
        try:
            self._c.check()
            items = [item for p in batch for item in p.items]
            keys, args = publish_args(self.keys, items, records, self.store.signer)
            results = (await self._publish_script(keys=keys, args=args)).split(b"\n")
        except Exception as exc:
            error = self._c.translate(exc) if isinstance(exc, RedisError) else exc
            if self._c.closed and not isinstance(error, TransportClosed):
                error = TransportClosed(f"the Redis transport for {self.url!r} is closed")
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(error)
            return
        start = 0
        for p in batch:
            n = len(p.items)
            mine = [r.decode() for r in results[start : start + n]]
            start += n
            if p.done.done():
                continue
            for r in mine:
                if r.startswith("!OOM"):
                    p.done.set_exception(self._c.out_of_memory(r[1:]))
                    break
                if r.startswith("!"):
                    p.done.set_exception(
                        TransportError(f"Redis at {self.url!r} refused a publish: {r[1:]}")
                    )
                    break
            else:
                p.done.set_result(mine)

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
        streams = {self.keys.topic(t): ("0" if pending else ">") for t in topics}
        if pending:

            async def history() -> list[Delivery]:
                response = await self._r.xreadgroup(group, consumer, streams, count=count)
                out = []
                for key, entries in response or []:
                    topic = self.keys.topic_name(_s(key))
                    ids = [_s(i) for i, _ in entries]
                    counts = await self._counts(topic, group, consumer, ids)
                    out.extend(self._deliveries([(key, entries)], counts))
                # Entries deleted while pending come back without fields: ack them away.
                for key, entries in response or []:
                    gone = [i for i, f in entries if f is None]
                    if gone:
                        await self._r.xack(key, group, *gone)
                return out

            return await self._idempotent(history)
        block = _block(block_ms)
        keys = list(streams)

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
            response = await self._blocking.xreadgroup(
                group, consumer, streams, count=count, block=block
            )
            out = self._deliveries(response)
            self._busy[reader] = len(out) > 1
            return out

        return await self._call(read)

    async def ack(
        self,
        acks: Sequence[Ack],
        *,
        records: Sequence[JournalEntry] = (),
        mark: Sequence[tuple[str, int]] = (),
    ) -> None:
        grouped: dict[tuple[str, str], list[str]] = {}
        for a in acks:
            ids = grouped.get(a[:2])
            if ids is None:
                ids = grouped[a[:2]] = []
            ids.append(a.entry_id)
        # MULTI/EXEC only when there is more than one command to keep together: acks
        # alone need none, and Redis out of memory refuses any MULTI but still takes
        # XACKs, which is how the writer acks while journal writes are refused.
        atomic = bool(mark or records) and len(grouped) + len(mark) + (1 if records else 0) > 1

        async def run() -> None:
            async with self._r.pipeline(transaction=atomic) as pipe:
                for (topic, group), ids in grouped.items():
                    pipe.xack(self.keys.topic(topic), group, *ids)
                for key, ttl in mark:
                    pipe.set(key, b"1", ex=ttl)
                self.store.queue(pipe, records)
                await pipe.execute()

        # Retrying is safe only without journal records (they would be written twice).
        if records:
            await self._call(run)
        else:
            await self._idempotent(run)

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

        async def run() -> bool:
            # WATCH the marker: if another consumer commits the same event between our
            # check and our EXEC, the EXEC is void and the next round sees the marker.
            async with self._r.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        if await pipe.exists(key):
                            await pipe.xack(stream, ack.group, ack.entry_id)
                            return False
                        pipe.multi()
                        for topic, payload in publish:
                            self._xadd(pipe, topic, payload)
                        pipe.xack(stream, ack.group, ack.entry_id)
                        pipe.set(key, b"1", ex=ttl)
                        self.store.queue(pipe, records)
                        await pipe.execute()
                        return True
                    except WatchError:
                        continue

        # Retrying is safe: a commit whose reply was lost left the marker behind.
        return await self._idempotent(run)

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
                await self._blocking.xread({key: after}, count=count, block=block)
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
        async def run() -> None:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.xadd(self.keys.dead_letters(topic), {LETTER_FIELD: json.dumps(letter)})
                pipe.xack(self.keys.topic(topic), group, entry_id)
                self.store.queue(pipe, records)
                await pipe.execute()

        await self._call(run)

    async def is_marked(self, key: str) -> bool:
        return bool(await self._idempotent(lambda: self._r.exists(key)))


def _block(block_ms: int | None) -> int | None:
    # BLOCK 0 means "forever" to Redis, but "wait up to 0 ms" in the transport contract
    # (and would trip the socket timeout): don't block at all, as the memory transport.
    return None if block_ms is None or block_ms <= 0 else min(block_ms, MAX_BLOCK_MS)
