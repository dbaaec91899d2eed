"""An in-process transport with the semantics of Redis Streams.

Consumer groups, pending lists, delivery counts, idle-time claiming and dead-letter
streams behave as on Redis (the conformance suite checks both), so code tested here
behaves the same in production. Time comes from an injectable :class:`Clock`, so tests
can make entries idle without sleeping. It is public API: use it in your own tests.

The transport is the broker; its journal store (:mod:`.memory_journal`) and its
administration (:mod:`.memory_admin`) are its ``store`` and ``admin``, acting on the
same streams (:mod:`.memory_streams`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..clock import Clock, SystemClock
from ..keys import DEFAULT_PREFIX, Keys
from .base import EVENT_FIELD, Ack, Delivery, EntryState, JournalEntry, entry_id_key
from .memory_admin import MemoryAdmin
from .memory_journal import MemoryJournalStore
from .memory_partitions import MemoryPartitions
from .memory_streams import Group, Pending, Streams, fmt

__all__ = ["MemoryTransport"]


class MemoryTransport(MemoryPartitions):
    """Topics in process memory; journal in SQLite (``journal_path``) or in memory (``None``).

    ``memory://`` URLs select it: ``memory://`` keeps the journal in
    ``./.agentbus/journal.sqlite3``; ``memory://?journal=PATH`` elsewhere;
    ``memory://?journal=`` (empty) keeps it in memory only.
    """

    def __init__(
        self,
        *,
        journal_path: str | Path | None = None,
        clock: Clock | None = None,
        url: str = "memory://",
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.url = url
        self.keys = Keys(prefix)
        self.clock: Clock = (clock := clock or SystemClock())
        streams = self._s = Streams(clock)
        self._parts = streams.partitions
        self._check = streams.check
        store = self.store = MemoryJournalStore(journal_path, streams.check)
        self.admin = MemoryAdmin(streams, store)

    # -- lifecycle --------------------------------------------------------------------
    async def connect(self) -> None:
        self._check()

    async def aclose(self) -> None:
        if self._s.closed:
            return
        self._s.closed = True
        self.store.close()
        self._s.wake()

    async def __aenter__(self) -> MemoryTransport:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- publishing -------------------------------------------------------------------
    async def publish(
        self, topic: str, payload: bytes, *, records: Sequence[JournalEntry] = ()
    ) -> str:
        self._check()
        entry_id = self._s.append(topic, {EVENT_FIELD: payload})
        self.store.append(records)
        self._s.wake()
        return entry_id

    async def publish_many(
        self, items: Sequence[tuple[str, bytes]], *, records: Sequence[JournalEntry] = ()
    ) -> list[str]:
        self._check()
        ids = [self._s.append(topic, {EVENT_FIELD: payload}) for topic, payload in items]
        self.store.append(records)
        self._s.wake()
        return ids

    # -- groups and deliveries ----------------------------------------------------------
    async def create_group(self, topic: str, group: str, *, from_start: bool = True) -> None:
        self._check()
        stream = self._s.stream(topic)
        if group not in stream.groups:
            stream.groups[group] = Group(last_id=(0, 0) if from_start else stream.last)

    async def delete_group(self, topic: str, group: str) -> None:
        self._check()
        stream = self._s.topics.get(topic)
        if stream is not None:
            stream.groups.pop(group, None)

    def _read_once(
        self, group: str, consumer: str, topics: Sequence[str], count: int, pending: bool
    ) -> list[Delivery]:
        now = self.clock.now_ms()
        out: list[Delivery] = []
        for topic in topics:
            stream, grp = self._s.group(topic, group)
            if pending:
                mine = sorted(i for i, p in grp.pel.items() if p.consumer == consumer)[:count]
                grp.consumers[consumer] = now  # as Redis 7.0: a history read always counts
                for entry_id in mine:
                    p = grp.pel[entry_id]
                    p.count += 1
                    p.delivered_ms = now
                    out.append(self._s.delivery(topic, stream, entry_id, p.count))
                continue
            for entry_id in stream.after(grp.last_id, count):
                # Redis 7.0 creates or refreshes a consumer on ">" only when it gets entries.
                grp.consumers[consumer] = now
                grp.last_id = entry_id
                grp.pel[entry_id] = Pending(consumer, now, 1)
                out.append(self._s.delivery(topic, stream, entry_id, 1))
        return out

    def reads_in_flight(self, group: str, consumer: str) -> set[str]:
        return set()  # a read ends with its call

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
        self._check()
        deadline = None if block_ms is None else time.monotonic() + block_ms / 1000
        while True:
            out = self._read_once(group, consumer, topics, count, pending)
            if out or pending or deadline is None:
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            await self._s.wait(int(remaining * 1000) + 1)
            self._check()

    async def ack(
        self,
        acks: Sequence[Ack],
        *,
        records: Sequence[JournalEntry] = (),
        mark: Sequence[tuple[str, int]] = (),
    ) -> None:
        self._check()
        for a in acks:
            grp = self._s.find_group(a.topic, a.group)
            if grp is not None:
                grp.pel.pop(entry_id_key(a.entry_id), None)
        now = time.monotonic()
        for key, ttl in mark:
            self._s.marks[key] = now + ttl
        self.store.append(records)

    async def commit(
        self,
        ack: Ack,
        mark: tuple[str, int],
        *,
        publish: Sequence[tuple[str, bytes]] = (),
        records: Sequence[JournalEntry] = (),
    ) -> bool:
        self._check()
        fresh = not await self.is_marked(mark[0])
        if fresh:
            for topic, payload in publish:
                self._s.append(topic, {EVENT_FIELD: payload})
            await self.ack([ack], records=records, mark=[mark])
            self._s.wake()
        else:
            await self.ack([ack])
        return fresh

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
        self._check()
        stream, grp = self._s.group(topic, group)
        now = self.clock.now_ms()
        start = entry_id_key(cursor)
        candidates = sorted(i for i in grp.pel if i >= start)
        out: list[Delivery] = []
        next_cursor = "0-0"
        for n, entry_id in enumerate(candidates):
            if len(out) == count:
                next_cursor = fmt(candidates[n])
                break
            p = grp.pel[entry_id]
            if now - p.delivered_ms < min_idle_ms:
                continue
            p.consumer, p.delivered_ms, p.count = consumer, now, p.count + 1
            grp.consumers[consumer] = now
            out.append(self._s.delivery(topic, stream, entry_id, p.count))
        return next_cursor, out

    async def extend_lease(
        self, topic: str, group: str, consumer: str, entry_ids: Sequence[str]
    ) -> None:
        self._check()
        grp = self._s.find_group(topic, group)
        if grp is None:
            return
        now = self.clock.now_ms()
        for raw in entry_ids:
            p = grp.pel.get(entry_id_key(raw))
            if p is not None:
                p.consumer, p.delivered_ms = consumer, now
                grp.consumers[consumer] = now

    async def read_tail(
        self, topic: str, after: str, *, count: int, block_ms: int | None
    ) -> list[Delivery]:
        self._check()
        deadline = None if block_ms is None else time.monotonic() + block_ms / 1000
        last = entry_id_key(after)
        while True:
            stream = self._s.topics.get(topic)
            if stream is not None:
                ids = stream.after(last, count)
                if ids:
                    return [self._s.delivery(topic, stream, i, 1) for i in ids]
            if deadline is None or deadline - time.monotonic() <= 0:
                return []
            await self._s.wait(int((deadline - time.monotonic()) * 1000) + 1)
            self._check()

    async def delete_topic(self, topic: str) -> None:
        self._check()
        self._s.topics.pop(topic, None)

    async def entry_state(self, topic: str, entry_id: str) -> list[EntryState]:
        self._check()
        stream = self._s.topics.get(topic)
        if stream is None:
            return []
        wanted, now, out = entry_id_key(entry_id), self.clock.now_ms(), []
        for name, grp in sorted(stream.groups.items()):
            p = grp.pel.get(wanted)
            if p is None:
                out.append(EntryState(name, grp.last_id >= wanted))
            else:
                out.append(EntryState(name, True, p.consumer, now - p.delivered_ms, p.count))
        return out

    async def dead_letter(
        self,
        topic: str,
        group: str,
        entry_id: str,
        letter: dict[str, Any],
        *,
        records: Sequence[JournalEntry] = (),
    ) -> None:
        self._check()
        self._s.add_letter(topic, json.dumps(letter).encode())
        await self.ack([Ack(topic, group, entry_id)], records=records)

    async def is_marked(self, key: str) -> bool:
        self._check()
        expiry = self._s.marks.get(key)
        return expiry is not None and expiry > time.monotonic()
