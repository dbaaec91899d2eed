"""The operator side of the Redis transport: topics, dead-letter listing, deletes.

What ``agentbus topics`` and ``agentbus dlq`` use, kept apart from the delivery path in
:mod:`agentbus.transports.redis`. :class:`RedisAdmin` is a mixin of
:class:`~agentbus.transports.redis.RedisStreamsTransport`; it needs the transport's client
(``_r``), key builder and call helpers. Nothing here imports redis-py.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..keys import Keys
from .base import DeadLetter, EntryState, GroupInfo, TopicInfo
from .base import text as _s

__all__ = ["LETTER_FIELD", "RedisAdmin"]

T = TypeVar("T")

#: The dead-letter stream field that carries one letter (JSON).
LETTER_FIELD = "letter"


class RedisAdmin:
    """Topics, dead letters and key deletion on Redis (a mixin of the Redis transport)."""

    keys: Keys
    _r: Any

    async def _idempotent(self, fn: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
        raise NotImplementedError

    async def delete_topic(self, topic: str) -> None:
        await self._idempotent(lambda: self._r.delete(self.keys.topic(topic)))

    async def entry_state(self, topic: str, entry_id: str) -> list[EntryState]:
        key = self.keys.topic(topic)
        wanted = _entry_key(entry_id)

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
                    out.append(EntryState(name, _entry_key(_s(g["last-delivered-id"])) >= wanted))
            return out

        return await self._idempotent(run)

    async def topics(self) -> list[TopicInfo]:
        async def run() -> list[TopicInfo]:
            keys = sorted(
                [
                    _s(k)
                    async for k in self._r.scan_iter(
                        match=self.keys.topic_pattern(), _type="STREAM"
                    )
                ]
            )
            out = []
            for key in keys:
                topic = self.keys.topic_name(key)
                async with self._r.pipeline(transaction=False) as pipe:
                    pipe.xlen(key)
                    pipe.xinfo_groups(key)
                    pipe.xlen(self.keys.dead_letters(topic))
                    length, groups, dlq = await pipe.execute()
                out.append(
                    TopicInfo(
                        topic=topic,
                        length=int(length),
                        groups=[
                            GroupInfo(
                                name=_s(g["name"]),
                                consumers=int(g["consumers"]),
                                pending=int(g["pending"]),
                                lag=None if g.get("lag") is None else int(g["lag"]),
                            )
                            for g in groups
                        ],
                        dead_letters=int(dlq),
                    )
                )
            return out

        return await self._idempotent(run)

    async def dead_letters(self, topic: str, *, count: int = 100) -> list[DeadLetter]:
        rows = await self._idempotent(
            lambda: self._r.xrange(self.keys.dead_letters(topic), count=count)
        )
        out = []
        for raw_id, fields in rows:
            body = json.loads(fields[LETTER_FIELD.encode()])
            out.append(DeadLetter.from_body(_s(raw_id), topic, body))
        return out

    async def remove_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> int:
        key = self.keys.dead_letters(topic)
        if ids is None:
            n = await self._idempotent(lambda: self._r.xlen(key))
            await self._idempotent(lambda: self._r.delete(key))
            return int(n)
        if not ids:
            return 0
        return int(await self._idempotent(lambda: self._r.xdel(key, *ids)))

    async def delete_prefix(self) -> int:
        """Delete every key under this transport's prefix (tests and teardown)."""

        async def run() -> int:
            n = 0
            batch: list[bytes] = []
            async for key in self._r.scan_iter(match=self.keys.prefix + "*", count=500):
                batch.append(key)
                if len(batch) >= 500:
                    n += await self._r.unlink(*batch)
                    batch = []
            if batch:
                n += await self._r.unlink(*batch)
            return n

        return await self._idempotent(run)


def _entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
