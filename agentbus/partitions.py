"""Partitioned topics: one topic spread over N streams, in order per partition key.

A topic declared with N partitions (``Runtime(partitions={"orders": 8})``, or
``App(partitions=...)``) is stored as N streams, ``orders#0`` … ``orders#7``, each its own
hash slot, so on a Redis Cluster the partitions spread over the masters. An event goes
to partition ``crc32(partitionkey) % N`` (stable across processes and versions); one
without a key, by its event id. The count is stored in the transport
(``declare_partitions``): a process that did not declare it looks it up, so every
publisher routes the same way, and a conflicting declaration raises ``UsageError``.

Events with the same key are handled in publish order, even with several replicas of
the consuming agent: the replicas of a shared subscription share the partitions out
between them (:func:`assign`), one owner per partition at a time, held by a lease; the
owner handles one key's events one after another. When a replica joins, leaves or dies,
the partitions are assigned again and the new owner first finishes what the previous
one left pending. Why it works that way: docs/architecture.md, "Partitioned topics".
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import zlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from . import _json
from .errors import UsageError
from .keys import validate_topic
from .transports.base import GroupInfo, TopicInfo

if TYPE_CHECKING:
    from .transports import Broker, Delivery

__all__ = [
    "PartitionTable",
    "assign",
    "fold_partitions",
    "partition_key",
    "partition_of",
    "partition_stream",
    "split_stream",
]

#: Reply inboxes (``_inbox.<consumer>``), never partitioned.
INBOX_PREFIX = "_inbox."

#: Most partitions a topic may have (each one a stream, a consumer-group read and a lease).
MAX_PARTITIONS = 1024


def partition_stream(topic: str, k: int) -> str:
    """The stream (a topic name) that carries partition ``k`` of ``topic``."""
    return f"{topic}#{k}"


def split_stream(stream: str) -> tuple[str, int] | None:
    """``(topic, k)`` when ``stream`` names a partition stream (``topic#k``), else ``None``."""
    topic, sep, k = stream.rpartition("#")
    if sep and topic and k.isdigit():
        return topic, int(k)
    return None


def partition_of(key: str | None, event_id: str, count: int) -> int:
    """The partition an event with partition key ``key`` goes to (by id without a key)."""
    return zlib.crc32((event_id if key is None else key).encode()) % count


def partition_key(d: Delivery) -> str:
    """The key a delivery is ordered by: its ``partitionkey``, else its event id (no order
    with other events), else its entry id (an undecodable entry)."""
    try:
        obj = _json.loads(d.payload or b"")
        key = obj.get("partitionkey") if isinstance(obj, dict) else None
        if key is None and isinstance(obj, dict):
            key = obj.get("id")
        if isinstance(key, str):
            return key
    except ValueError:
        pass
    return f"\0{d.entry_id}"


def _score(member: str, k: int) -> int:
    digest = hashlib.blake2b(f"{member}\0{k}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(members: Iterable[str], count: int) -> dict[str, set[int]]:
    """Which partitions each member owns: every partition exactly one member.

    Deterministic (every member computes the same from the same member list, in any
    order), balanced (each member gets ``count // len(members)`` partitions or one more)
    and stable: it is rendezvous hashing (each partition prefers the members by a hash
    of the pair) with quotas, so a member joining or leaving moves few partitions besides
    its own share. No members: an empty mapping.
    """
    names = sorted(set(members))
    if not names:
        return {}
    quota, extra = divmod(count, len(names))
    owned: dict[str, set[int]] = {m: set() for m in names}
    # Strongest preferences first: a pair is taken unless its partition is taken or its
    # member is full (``quota``, or ``quota + 1`` for the first ``extra`` that get there).
    pairs = sorted(((_score(m, k), m, k) for m in names for k in range(count)), reverse=True)
    taken: set[int] = set()
    bigger = 0
    for _, m, k in pairs:
        if k in taken:
            continue
        n = len(owned[m])
        if n < quota or (n == quota and bigger < extra):
            if n == quota:
                bigger += 1
            owned[m].add(k)
            taken.add(k)
            if len(taken) == count:
                break
    return owned


class PartitionTable:
    """How many partitions each topic has, as declared here or stored in the transport.

    Declared counts and counts looked up are kept for good (a count never changes); a
    topic found unpartitioned is looked up again after ``recheck`` seconds, so a process
    that published before another declared the topic starts routing within that time.
    """

    def __init__(
        self, transport: Broker, declared: Mapping[str, int] | None = None, recheck: float = 5.0
    ) -> None:
        self._transport = transport
        self.declared: dict[str, int] = {}
        for topic, count in (declared or {}).items():
            validate_topic(topic)
            if "#" in topic:
                raise UsageError(f"a partitioned topic's name cannot hold '#', got {topic!r}")
            if not isinstance(count, int) or not 1 <= count <= MAX_PARTITIONS:
                raise UsageError(
                    f"partitions of {topic!r} must be an int from 1 to {MAX_PARTITIONS}, "
                    f"got {count!r}"
                )
            self.declared[topic] = count
        self._known: dict[str, int] = {}
        self._unpartitioned: dict[str, float] = {}
        #: Lookups in flight: concurrent publishes to a topic share one (a burst of
        #: hundreds would otherwise ask hundreds of times and exhaust the connections).
        self._asking: dict[str, asyncio.Future[int]] = {}
        self._recheck = recheck

    async def declare(self) -> None:
        """Store the declared counts; raise :class:`UsageError` when one conflicts."""
        for topic, count in self.declared.items():
            stored = await self._transport.declare_partitions(topic, count)
            if stored != count:
                raise UsageError(
                    f"topic {topic!r} is declared with {count} partitions here but has "
                    f"{stored} in the store; a topic's partition count cannot change"
                )
            self._known[topic] = count

    async def route(self, topic: str, key: str | None, event_id: str) -> tuple[str, int | None]:
        """The stream an event for ``topic`` goes to, and its partition (``None``: none)."""
        count = self.cached(topic)
        if count is None:
            count = await self.count(topic)
        if not count:
            return topic, None
        k = partition_of(key, event_id, count)
        return partition_stream(topic, k), k

    def cached(self, topic: str) -> int | None:
        """The count if known without asking the transport (0: unpartitioned for now)."""
        if topic.startswith(INBOX_PREFIX):
            return 0  # reply inboxes are never partitioned: spare the lookups
        known = self._known.get(topic)
        if known is not None:
            return known
        until = self._unpartitioned.get(topic)
        if until is not None and time.monotonic() < until:
            return 0
        return None

    async def count(self, topic: str) -> int:
        """How many partitions ``topic`` has (0: not partitioned)."""
        cached = self.cached(topic)
        if cached is not None:
            return cached
        asking = self._asking.get(topic)
        if asking is not None:
            try:
                return await asyncio.shield(asking)
            except asyncio.CancelledError:
                if not asking.cancelled():
                    raise  # we were cancelled, not the lookup
                return await self.count(topic)  # its asker was: ask again
        fut = self._asking[topic] = asyncio.get_running_loop().create_future()
        try:
            count = await self._lookup(topic)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: a lookup nobody else waited for is not an error
            raise
        else:
            fut.set_result(count)
            return count
        finally:
            del self._asking[topic]

    async def _lookup(self, topic: str) -> int:
        stored = await self._transport.partition_count(topic)
        if stored:
            self._known[topic] = stored
            self._unpartitioned.pop(topic, None)
            return stored
        if len(self._unpartitioned) > 10_000:  # reply inboxes come and go: stay bounded
            self._unpartitioned.clear()
        self._unpartitioned[topic] = time.monotonic() + self._recheck
        return 0


def fold_partitions(topics: list[TopicInfo]) -> list[TopicInfo]:
    """``topics`` with each partitioned topic's streams folded into one
    (``orders#0..#7``): lengths, pending counts, lags and dead letters summed per group,
    consumers the most any partition has (what ``agentbus topics`` shows)."""
    out: list[TopicInfo] = []
    folded: dict[str, tuple[TopicInfo, list[int]]] = {}
    for t in topics:
        split = split_stream(t.topic)
        if split is None:
            out.append(t)
            continue
        base, k = split
        if base not in folded:
            folded[base] = (TopicInfo(base, 0, [], 0), [])
            out.append(folded[base][0])
        row, parts = folded[base]
        parts.append(k)
        row.topic = f"{base}#{min(parts)}..#{max(parts)}"
        row.length += t.length
        row.dead_letters += t.dead_letters
        by_name = {g.name: g for g in row.groups}
        for g in t.groups:
            mine = by_name.get(g.name)
            if mine is None:
                row.groups.append(GroupInfo(g.name, g.consumers, g.pending, g.lag))
                continue
            mine.consumers = max(mine.consumers, g.consumers)
            mine.pending += g.pending
            mine.lag = None if mine.lag is None or g.lag is None else mine.lag + g.lag
    return out
