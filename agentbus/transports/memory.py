"""An in-process transport with the semantics of Redis Streams.

Consumer groups, pending lists, delivery counts, idle-time claiming and dead-letter
streams behave as on Redis (the conformance suite checks both), so code tested here
behaves the same in production. Time comes from an injectable :class:`Clock`, so tests
can make entries idle without sleeping. It is public API: use it in your own tests.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..clock import Clock, SystemClock
from ..errors import GroupNotFound, TransportClosed
from ..keys import DEFAULT_PREFIX, Keys
from .base import (
    EVENT_FIELD,
    Ack,
    DeadConsumer,
    DeadLetter,
    Delivery,
    EntryState,
    GroupInfo,
    JournalEntry,
    JournalRecord,
    RunInfo,
    TopicInfo,
)
from .sqlite_journal import SqliteJournal

if TYPE_CHECKING:
    from ..signing import Signer

__all__ = ["MemoryTransport"]

_Id = tuple[int, int]
_FLUSH_DELAY_S = 0.2


def _fmt(entry_id: _Id) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


def _parse(entry_id: str) -> _Id:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _succ(entry_id: _Id) -> _Id:
    return entry_id[0], entry_id[1] + 1


@dataclass(slots=True)
class _Pending:
    consumer: str
    delivered_ms: int
    count: int


@dataclass
class _Group:
    last_id: _Id
    pel: dict[_Id, _Pending] = field(default_factory=dict)
    #: Consumer name -> when it last read, claimed or renewed a lease (clock ms).
    consumers: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Presence:
    seen_ms: int
    every_ms: int
    groups: list[tuple[str, str]]
    inbox: str | None


@dataclass
class _Stream:
    ids: list[_Id] = field(default_factory=list)
    fields: dict[_Id, dict[str, bytes]] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    last: _Id = (0, 0)

    def after(self, last: _Id, count: int) -> list[_Id]:
        start = bisect.bisect_right(self.ids, last)
        return self.ids[start : start + count]


class MemoryTransport:
    """Topics in process memory; journal in SQLite (``journal_path``) or in memory (``None``).

    ``memory://`` URLs select it: ``memory://`` keeps the journal in
    ``./.agentbus/journal.sqlite3``; ``memory://?journal=PATH`` elsewhere;
    ``memory://?journal=`` (empty) keeps it in memory only.
    """

    #: Signs every journal record written (set by a :class:`~agentbus.Runtime` with a signer).
    journal_signer: Signer | None = None

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
        self.clock: Clock = clock or SystemClock()
        self._streams: dict[str, _Stream] = {}
        self._dlq: dict[str, _Stream] = {}
        self._pending: list[JournalEntry] = []
        self._marks: dict[str, float] = {}
        self._presence: dict[str, _Presence] = {}
        self._journal_path = journal_path
        self._sqlite: SqliteJournal | None = None  # opened on first use (see _journal)
        self._changed = asyncio.Event()
        self._waiting = 0  # readers blocked in _wait; no one to wake when 0
        self._closed = False
        self._flush_handle: asyncio.TimerHandle | None = None

    @property
    def _journal(self) -> SqliteJournal:
        # Opened when first needed, so constructing a transport (or a Runtime that is never
        # started) opens no database and leaves nothing to close.
        if self._sqlite is None:
            self._sqlite = SqliteJournal(self._journal_path)
        return self._sqlite

    # -- lifecycle --------------------------------------------------------------------
    async def connect(self) -> None:
        self._check()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._drain()
        if self._sqlite is not None:
            self._sqlite.close()
        self._wake()

    async def __aenter__(self) -> MemoryTransport:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _check(self) -> None:
        if self._closed:
            raise TransportClosed("the memory transport is closed")

    def _wake(self) -> None:
        # One event shared by all waiters: set it to wake everyone, then replace it so
        # the next wait blocks again. Waiters re-check their condition after waking.
        # Every publish calls this; with no reader blocked there is nothing to do.
        if self._waiting:
            self._changed.set()
            self._changed = asyncio.Event()

    async def _wait(self, block_ms: int) -> None:
        # Not asyncio.wait_for: on 3.11 it swallows a cancellation that arrives just as the
        # event is set, so a cancelled reader kept looping and its owner's close hung.
        self._waiting += 1
        try:
            async with asyncio.timeout(block_ms / 1000):
                await self._changed.wait()
        except TimeoutError:
            pass
        finally:
            self._waiting -= 1

    def _stream(self, topic: str) -> _Stream:
        stream = self._streams.get(topic)
        if stream is None:
            stream = self._streams[topic] = _Stream()
        return stream

    def _next_id(self, stream: _Stream) -> _Id:
        ms = self.clock.now_ms()
        last_ms, last_seq = stream.last
        new = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        stream.last = new
        return new

    # -- topics -------------------------------------------------------------------------
    def _append(self, topic: str, fields: dict[str, bytes]) -> str:
        stream = self._stream(topic)
        entry_id = self._next_id(stream)
        stream.ids.append(entry_id)
        stream.fields[entry_id] = fields
        return _fmt(entry_id)

    async def add_raw(self, topic: str, fields: dict[str, bytes]) -> str:
        """Append an entry with arbitrary fields (for tests of hostile input)."""
        self._check()
        entry_id = self._append(topic, fields)
        self._wake()
        return entry_id

    async def publish(
        self, topic: str, payload: bytes, *, journal: Sequence[JournalEntry] = ()
    ) -> str:
        self._check()
        entry_id = self._append(topic, {EVENT_FIELD: payload})
        self._journal_append(journal)
        self._wake()
        return entry_id

    async def publish_many(
        self, items: Sequence[tuple[str, bytes]], *, journal: Sequence[JournalEntry] = ()
    ) -> list[str]:
        self._check()
        ids = [self._append(topic, {EVENT_FIELD: payload}) for topic, payload in items]
        self._journal_append(journal)
        self._wake()
        return ids

    async def create_group(self, topic: str, group: str, *, from_start: bool = True) -> None:
        self._check()
        stream = self._stream(topic)
        if group not in stream.groups:
            stream.groups[group] = _Group(last_id=(0, 0) if from_start else stream.last)

    async def delete_group(self, topic: str, group: str) -> None:
        self._check()
        stream = self._streams.get(topic)
        if stream is not None:
            stream.groups.pop(group, None)

    def _group(self, topic: str, group: str) -> tuple[_Stream, _Group]:
        stream = self._streams.get(topic)
        grp = None if stream is None else stream.groups.get(group)
        if stream is None or grp is None:
            raise GroupNotFound(f"no consumer group {group!r} on topic {topic!r}")
        return stream, grp

    def _delivery(self, topic: str, stream: _Stream, entry_id: _Id, count: int) -> Delivery:
        fields = stream.fields[entry_id]
        # The stored fields are copied only if a dead letter asks for them.
        return Delivery(
            topic, _fmt(entry_id), fields.get(EVENT_FIELD), None, count, raw_fields=fields
        )

    def _read_once(
        self, group: str, consumer: str, topics: Sequence[str], count: int, pending: bool
    ) -> list[Delivery]:
        now = self.clock.now_ms()
        out: list[Delivery] = []
        for topic in topics:
            stream, grp = self._group(topic, group)
            if pending:
                mine = sorted(i for i, p in grp.pel.items() if p.consumer == consumer)[:count]
                grp.consumers[consumer] = now  # as Redis 7.0: a history read always counts
                for entry_id in mine:
                    p = grp.pel[entry_id]
                    p.count += 1
                    p.delivered_ms = now
                    out.append(self._delivery(topic, stream, entry_id, p.count))
                continue
            for entry_id in stream.after(grp.last_id, count):
                # Redis 7.0 creates or refreshes a consumer on ">" only when it gets entries.
                grp.consumers[consumer] = now
                grp.last_id = entry_id
                grp.pel[entry_id] = _Pending(consumer, now, 1)
                out.append(self._delivery(topic, stream, entry_id, 1))
        return out

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
            await self._wait(int(remaining * 1000) + 1)
            self._check()

    async def ack(
        self,
        acks: Sequence[Ack],
        *,
        journal: Sequence[JournalEntry] = (),
        mark: Sequence[tuple[str, int]] = (),
    ) -> None:
        self._check()
        for a in acks:
            stream = self._streams.get(a.topic)
            grp = None if stream is None else stream.groups.get(a.group)
            if grp is not None:
                grp.pel.pop(_parse(a.entry_id), None)
        now = time.monotonic()
        for key, ttl in mark:
            self._marks[key] = now + ttl
        self._journal_append(journal)

    async def commit(
        self,
        ack: Ack,
        mark: tuple[str, int],
        *,
        publish: Sequence[tuple[str, bytes]] = (),
        journal: Sequence[JournalEntry] = (),
    ) -> bool:
        self._check()
        fresh = not await self.is_marked(mark[0])
        if fresh:
            for topic, payload in publish:
                self._append(topic, {EVENT_FIELD: payload})
            await self.ack([ack], journal=journal, mark=[mark])
            self._wake()
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
        stream, grp = self._group(topic, group)
        now = self.clock.now_ms()
        start = _parse(cursor)
        candidates = sorted(i for i in grp.pel if i >= start)
        out: list[Delivery] = []
        next_cursor = "0-0"
        for n, entry_id in enumerate(candidates):
            if len(out) == count:
                next_cursor = _fmt(candidates[n])
                break
            p = grp.pel[entry_id]
            if now - p.delivered_ms < min_idle_ms:
                continue
            p.consumer, p.delivered_ms, p.count = consumer, now, p.count + 1
            grp.consumers[consumer] = now
            out.append(self._delivery(topic, stream, entry_id, p.count))
        return next_cursor, out

    async def extend_lease(
        self, topic: str, group: str, consumer: str, entry_ids: Sequence[str]
    ) -> None:
        self._check()
        stream = self._streams.get(topic)
        grp = None if stream is None else stream.groups.get(group)
        if grp is None:
            return
        now = self.clock.now_ms()
        for raw in entry_ids:
            p = grp.pel.get(_parse(raw))
            if p is not None:
                p.consumer, p.delivered_ms = consumer, now
                grp.consumers[consumer] = now

    async def read_tail(
        self, topic: str, after: str, *, count: int, block_ms: int | None
    ) -> list[Delivery]:
        self._check()
        deadline = None if block_ms is None else time.monotonic() + block_ms / 1000
        last = _parse(after)
        while True:
            stream = self._streams.get(topic)
            if stream is not None:
                ids = stream.after(last, count)
                if ids:
                    return [self._delivery(topic, stream, i, 1) for i in ids]
            if deadline is None or deadline - time.monotonic() <= 0:
                return []
            await self._wait(int((deadline - time.monotonic()) * 1000) + 1)
            self._check()

    async def delete_topic(self, topic: str) -> None:
        self._check()
        self._streams.pop(topic, None)

    async def entry_state(self, topic: str, entry_id: str) -> list[EntryState]:
        self._check()
        stream = self._streams.get(topic)
        if stream is None:
            return []
        wanted, now, out = _parse(entry_id), self.clock.now_ms(), []
        for name, grp in sorted(stream.groups.items()):
            p = grp.pel.get(wanted)
            if p is None:
                out.append(EntryState(name, grp.last_id >= wanted))
            else:
                out.append(EntryState(name, True, p.consumer, now - p.delivered_ms, p.count))
        return out

    async def topics(self) -> list[TopicInfo]:
        self._check()
        out = []
        for name in sorted(self._streams):
            stream = self._streams[name]
            groups = []
            for gname, grp in sorted(stream.groups.items()):
                lag = len(stream.ids) - bisect.bisect_right(stream.ids, grp.last_id)
                groups.append(GroupInfo(gname, len(grp.consumers), len(grp.pel), lag))
            dlq = self._dlq.get(name)
            out.append(TopicInfo(name, len(stream.ids), groups, 0 if dlq is None else len(dlq.ids)))
        return out

    # -- dead letters ---------------------------------------------------------------------
    async def dead_letter(
        self,
        topic: str,
        group: str,
        entry_id: str,
        letter: dict[str, Any],
        *,
        journal: Sequence[JournalEntry] = (),
    ) -> None:
        self._check()
        dlq = self._dlq.setdefault(topic, _Stream())
        dlq_id = self._next_id(dlq)
        dlq.ids.append(dlq_id)
        dlq.fields[dlq_id] = {"letter": json.dumps(letter).encode()}
        await self.ack([Ack(topic, group, entry_id)], journal=journal)

    async def dead_letters(self, topic: str, *, count: int = 100) -> list[DeadLetter]:
        self._check()
        stream = self._dlq.get(topic)
        if stream is None:
            return []
        return [
            DeadLetter.from_body(_fmt(i), topic, json.loads(stream.fields[i]["letter"]))
            for i in stream.ids[:count]
        ]

    async def remove_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> int:
        self._check()
        stream = self._dlq.get(topic)
        if stream is None:
            return 0
        doomed = set(stream.ids) if ids is None else {_parse(i) for i in ids} & set(stream.ids)
        stream.ids = [i for i in stream.ids if i not in doomed]
        for i in doomed:
            del stream.fields[i]
        return len(doomed)

    async def retry_dead_letter(
        self, topic: str, letter_id: str, *, journal: Sequence[JournalEntry] = ()
    ) -> str | None:
        self._check()
        dlq = self._dlq.get(topic)
        key = _parse(letter_id)
        if dlq is None or key not in dlq.fields:
            return None
        payload = str(json.loads(dlq.fields[key]["letter"]).get("payload", "")).encode("utf-8")
        entry_id = self._append(topic, {EVENT_FIELD: payload})
        dlq.ids.remove(key)
        del dlq.fields[key]
        self._journal_append(journal)
        self._wake()
        return entry_id

    # -- retention ----------------------------------------------------------------------------
    async def trim_acknowledged(self, topic: str, *, consumed: str | None = None) -> int:
        self._check()
        stream = self._streams.get(topic)
        if stream is None:
            return 0
        # As on Redis: the lowest id any group still needs (its oldest pending entry,
        # else the one after its last delivered), or after a groupless reader's position.
        needs = [min(g.pel) if g.pel else _succ(g.last_id) for g in stream.groups.values()]
        if not needs:
            if consumed is None:
                return 0
            needs = [_succ(_parse(consumed))]
        cut = bisect.bisect_left(stream.ids, min(needs))
        doomed, stream.ids = stream.ids[:cut], stream.ids[cut:]
        for entry_id in doomed:
            del stream.fields[entry_id]
        return len(doomed)

    async def remove_idle_consumers(self, topic: str, group: str, *, idle_ms: int) -> list[str]:
        self._check()
        stream = self._streams.get(topic)
        grp = None if stream is None else stream.groups.get(group)
        if grp is None:
            return []
        now = self.clock.now_ms()
        busy = {p.consumer for p in grp.pel.values()}
        removed = sorted(
            name
            for name, seen in grp.consumers.items()
            if name not in busy and now - seen > idle_ms
        )
        for name in removed:
            del grp.consumers[name]
        return removed

    async def prune_runs(self, *, before: float) -> list[str]:
        self._check()
        self._drain()
        pruned = self._journal.prune(before)
        self._journal.flush()
        return pruned

    # -- presence ---------------------------------------------------------------------------
    async def announce(
        self,
        consumer: str,
        *,
        groups: Sequence[tuple[str, str]],
        inbox: str | None,
        every_ms: int,
    ) -> None:
        self._check()
        self._presence[consumer] = _Presence(
            self.clock.now_ms(), int(every_ms), [(t, g) for t, g in groups], inbox
        )

    async def heartbeat(self, consumer: str) -> bool:
        self._check()
        record = self._presence.get(consumer)
        if record is None:
            return False
        record.seen_ms = self.clock.now_ms()
        return True

    async def withdraw(self, consumer: str) -> None:
        self._check()
        self._presence.pop(consumer, None)

    async def prune_dead_consumers(
        self, *, idle_ms: int, dry_run: bool = False
    ) -> list[DeadConsumer]:
        self._check()
        now = self.clock.now_ms()
        dead = []
        for name, p in sorted(self._presence.items(), key=lambda kv: kv[1].seen_ms):
            idle = now - p.seen_ms
            if idle > max(idle_ms, 3 * p.every_ms):
                dead.append(DeadConsumer(name, idle / 1000, list(p.groups), p.inbox))
        if not dry_run:
            for d in dead:
                for topic, group in d.groups:
                    stream = self._streams.get(topic)
                    if stream is not None:
                        stream.groups.pop(group, None)
                if d.inbox is not None:
                    self._streams.pop(d.inbox, None)
                del self._presence[d.consumer]
        return dead

    async def is_marked(self, key: str) -> bool:
        self._check()
        expiry = self._marks.get(key)
        return expiry is not None and expiry > time.monotonic()

    # -- journal ----------------------------------------------------------------------------
    def _journal_append(self, journal: Sequence[JournalEntry]) -> None:
        # Records wait in a list and reach SQLite in batches (on a short timer, before any
        # read and on close): one executemany per batch instead of several per publish.
        if not journal:
            return
        self._pending.extend(journal)
        self._schedule_flush()

    def _drain(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self._journal.append(pending, self.journal_signer)

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(_FLUSH_DELAY_S, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._closed:
            self._drain()
            self._journal.flush()

    async def save_run(self, run: RunInfo) -> None:
        self._check()
        self._drain()  # keep records and run updates in the order they were made
        self._journal.save_run(run)
        self._schedule_flush()

    async def write_journal(self, journal: Sequence[JournalEntry]) -> None:
        self._check()
        self._journal_append(journal)

    async def list_runs(self, *, limit: int = 100) -> list[RunInfo]:
        self._check()
        self._drain()
        return self._journal.list_runs(limit)

    async def get_run(self, run_id: str) -> RunInfo | None:
        self._check()
        self._drain()
        return self._journal.get_run(run_id)

    async def read_journal(self, run_id: str) -> list[JournalRecord]:
        self._check()
        self._drain()
        return self._journal.read(run_id)
