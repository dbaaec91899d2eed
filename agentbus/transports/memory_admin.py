"""The memory transport's administration: topic listings, dead letters, retention,
presence.

Acts on the same :class:`~agentbus.transports.memory_streams.Streams` as the broker,
with Redis's semantics (the conformance suite checks both). Presence records (what each
runtime announced) live here: only the admin reads or writes them.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass

from .base import (
    EVENT_FIELD,
    DeadConsumer,
    DeadLetter,
    GroupInfo,
    JournalEntry,
    TopicInfo,
    entry_id_key,
)
from .memory_journal import MemoryJournalStore
from .memory_streams import LETTER_FIELD, Streams, fmt, succ

__all__ = ["MemoryAdmin"]


@dataclass(slots=True)
class _Presence:
    seen_ms: int
    every_ms: int
    groups: list[tuple[str, str]]
    inbox: str | None


class MemoryAdmin:
    """What ``agentbus topics``/``dlq``, retention and presence use, in memory."""

    def __init__(self, streams: Streams, store: MemoryJournalStore) -> None:
        self._s = streams
        self._store = store
        self._presence: dict[str, _Presence] = {}

    async def topics(self) -> list[TopicInfo]:
        self._s.check()
        out = []
        for name in sorted(self._s.topics):
            stream = self._s.topics[name]
            groups = []
            for gname, grp in sorted(stream.groups.items()):
                lag = len(stream.ids) - bisect.bisect_right(stream.ids, grp.last_id)
                groups.append(GroupInfo(gname, len(grp.consumers), len(grp.pel), lag))
            dlq = self._s.dlq.get(name)
            out.append(TopicInfo(name, len(stream.ids), groups, 0 if dlq is None else len(dlq.ids)))
        return out

    async def dead_letters(self, topic: str, *, count: int = 100) -> list[DeadLetter]:
        self._s.check()
        stream = self._s.dlq.get(topic)
        if stream is None:
            return []
        return [
            DeadLetter.from_body(fmt(i), topic, json.loads(stream.fields[i][LETTER_FIELD]))
            for i in stream.ids[:count]
        ]

    async def remove_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> int:
        self._s.check()
        stream = self._s.dlq.get(topic)
        if stream is None:
            return 0
        present = set(stream.ids)
        doomed = present if ids is None else {entry_id_key(i) for i in ids} & present
        stream.ids = [i for i in stream.ids if i not in doomed]
        for i in doomed:
            del stream.fields[i]
        return len(doomed)

    async def retry_dead_letter(
        self, topic: str, letter_id: str, *, records: Sequence[JournalEntry] = ()
    ) -> str | None:
        self._s.check()
        dlq = self._s.dlq.get(topic)
        key = entry_id_key(letter_id)
        if dlq is None or key not in dlq.fields:
            return None
        body = json.loads(dlq.fields[key][LETTER_FIELD])
        payload = str(body.get("payload", "")).encode("utf-8")
        entry_id = self._s.append(topic, {EVENT_FIELD: payload})
        dlq.ids.remove(key)
        del dlq.fields[key]
        self._store.append(records)
        self._s.wake()
        return entry_id

    async def trim_acknowledged(self, topic: str, *, consumed: str | None = None) -> int:
        self._s.check()
        stream = self._s.topics.get(topic)
        if stream is None:
            return 0
        # As on Redis: the lowest id any group still needs (its oldest pending entry,
        # else the one after its last delivered), or after a groupless reader's position.
        needs = [min(g.pel) if g.pel else succ(g.last_id) for g in stream.groups.values()]
        if not needs:
            if consumed is None:
                return 0
            needs = [succ(entry_id_key(consumed))]
        cut = bisect.bisect_left(stream.ids, min(needs))
        doomed, stream.ids = stream.ids[:cut], stream.ids[cut:]
        for entry_id in doomed:
            del stream.fields[entry_id]
        return len(doomed)

    async def remove_idle_consumers(self, topic: str, group: str, *, idle_ms: int) -> list[str]:
        self._s.check()
        grp = self._s.find_group(topic, group)
        if grp is None:
            return []
        now = self._s.clock.now_ms()
        busy = {p.consumer for p in grp.pel.values()}
        removed = sorted(
            name
            for name, seen in grp.consumers.items()
            if name not in busy and now - seen > idle_ms
        )
        for name in removed:
            del grp.consumers[name]
        return removed

    # -- presence ---------------------------------------------------------------------------
    async def announce(
        self,
        consumer: str,
        *,
        groups: Sequence[tuple[str, str]],
        inbox: str | None,
        every_ms: int,
    ) -> None:
        self._s.check()
        self._presence[consumer] = _Presence(
            self._s.clock.now_ms(), int(every_ms), [(t, g) for t, g in groups], inbox
        )

    async def heartbeat(self, consumer: str) -> bool:
        self._s.check()
        record = self._presence.get(consumer)
        if record is None:
            return False
        record.seen_ms = self._s.clock.now_ms()
        return True

    async def withdraw(self, consumer: str) -> None:
        self._s.check()
        self._presence.pop(consumer, None)

    async def prune_dead_consumers(
        self, *, idle_ms: int, dry_run: bool = False
    ) -> list[DeadConsumer]:
        self._s.check()
        now = self._s.clock.now_ms()
        dead = []
        for name, p in sorted(self._presence.items(), key=lambda kv: kv[1].seen_ms):
            idle = now - p.seen_ms
            if idle > max(idle_ms, 3 * p.every_ms):
                dead.append(DeadConsumer(name, idle / 1000, list(p.groups), p.inbox))
        if not dry_run:
            for d in dead:
                for topic, group in d.groups:
                    stream = self._s.topics.get(topic)
                    if stream is not None:
                        stream.groups.pop(group, None)
                if d.inbox is not None:
                    self._s.topics.pop(d.inbox, None)
                del self._presence[d.consumer]
        return dead

    async def delete_prefix(self) -> int:
        """Delete every topic, dead letter, marker, presence record, run and journal
        record of this transport."""
        self._s.check()
        n = len(self._s.topics) + len(self._s.dlq) + len(self._s.marks) + len(self._presence)
        self._s.topics.clear()
        self._s.dlq.clear()
        self._s.marks.clear()
        self._presence.clear()
        n += self._s.partitions.clear()
        return n + self._store.delete_all()
