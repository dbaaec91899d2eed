"""The state of the memory transport: streams, groups, pending lists, dead letters.

Shared by its broker (:mod:`agentbus.transports.memory`) and its administration
(:mod:`agentbus.transports.memory_admin`): both act on one :class:`Streams`, which also
wakes blocked readers when an entry arrives. Entry ids are ``(ms, seq)`` pairs,
formatted like Redis's ``"<ms>-<seq>"``.
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass, field

from ..clock import Clock
from ..errors import GroupNotFound, TransportClosed
from .base import EVENT_FIELD, Delivery
from .memory_partitions import PartitionState

__all__ = ["Streams"]

Id = tuple[int, int]


def fmt(entry_id: Id) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


def succ(entry_id: Id) -> Id:
    return entry_id[0], entry_id[1] + 1


@dataclass(slots=True)
class Pending:
    consumer: str
    delivered_ms: int
    count: int


@dataclass
class Group:
    last_id: Id
    pel: dict[Id, Pending] = field(default_factory=dict)
    #: Consumer name -> when it last read, claimed or renewed a lease (clock ms).
    consumers: dict[str, int] = field(default_factory=dict)


@dataclass
class Stream:
    ids: list[Id] = field(default_factory=list)
    fields: dict[Id, dict[str, bytes]] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    last: Id = (0, 0)

    def after(self, last: Id, count: int) -> list[Id]:
        start = bisect.bisect_right(self.ids, last)
        return self.ids[start : start + count]


class Streams:
    """Topics and dead-letter streams in memory, with the readers waiting on them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.topics: dict[str, Stream] = {}
        self.dlq: dict[str, Stream] = {}
        #: De-duplication markers: key -> expiry (monotonic seconds).
        self.marks: dict[str, float] = {}
        #: Partition counts, members and leases (see memory_partitions).
        self.partitions = PartitionState()
        self.closed = False
        self._changed = asyncio.Event()
        self._waiting = 0  # readers blocked in wait; no one to wake when 0

    def check(self) -> None:
        if self.closed:
            raise TransportClosed("the memory transport is closed")

    def wake(self) -> None:
        # One event shared by all waiters: set it to wake everyone, then replace it so
        # the next wait blocks again. Waiters re-check their condition after waking.
        # Every publish calls this; with no reader blocked there is nothing to do.
        if self._waiting:
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait(self, block_ms: int) -> None:
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

    def stream(self, topic: str) -> Stream:
        stream = self.topics.get(topic)
        if stream is None:
            stream = self.topics[topic] = Stream()
        return stream

    def group(self, topic: str, group: str) -> tuple[Stream, Group]:
        stream = self.topics.get(topic)
        grp = None if stream is None else stream.groups.get(group)
        if stream is None or grp is None:
            raise GroupNotFound(f"no consumer group {group!r} on topic {topic!r}")
        return stream, grp

    def find_group(self, topic: str, group: str) -> Group | None:
        stream = self.topics.get(topic)
        return None if stream is None else stream.groups.get(group)

    def next_id(self, stream: Stream) -> Id:
        ms = self.clock.now_ms()
        last_ms, last_seq = stream.last
        new = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        stream.last = new
        return new

    def append(self, topic: str, fields: dict[str, bytes]) -> str:
        """Append an entry (without waking readers: the caller wakes them once)."""
        stream = self.stream(topic)
        entry_id = self.next_id(stream)
        stream.ids.append(entry_id)
        stream.fields[entry_id] = fields
        return fmt(entry_id)

    def add_letter(self, topic: str, body: bytes) -> None:
        dlq = self.dlq.setdefault(topic, Stream())
        dlq_id = self.next_id(dlq)
        dlq.ids.append(dlq_id)
        dlq.fields[dlq_id] = {LETTER_FIELD: body}

    @staticmethod
    def delivery(topic: str, stream: Stream, entry_id: Id, count: int) -> Delivery:
        fields = stream.fields[entry_id]
        # The stored fields are copied only if a dead letter asks for them.
        return Delivery(
            topic, fmt(entry_id), fields.get(EVENT_FIELD), None, count, raw_fields=fields
        )


#: The field of a dead-letter entry holding the letter (JSON), as on Redis.
LETTER_FIELD = "letter"
