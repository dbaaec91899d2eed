"""Writing arbitrary stream entries, for tests of hostile input.

A production transport only appends well-formed events; tests of what the runtime does
with garbage (an entry without the event field, bad JSON, a forged envelope written by
something else) need to write such entries. :func:`add_raw` does, on the memory and
the Redis transport, without a method for it on either.
"""

from __future__ import annotations

from ..errors import UsageError
from ..transports import MemoryTransport, Transport

__all__ = ["add_raw"]


async def add_raw(transport: Transport, topic: str, fields: dict[str, bytes]) -> str:
    """Append an entry with exactly ``fields`` to ``topic``; returns its id.

    Raises :class:`~agentbus.errors.UsageError` for a transport other than the memory
    or the Redis one, and what the transport raises when it is closed or unreachable.
    """
    if isinstance(transport, MemoryTransport):
        streams = transport._s
        streams.check()
        entry_id = streams.append(topic, dict(fields))
        streams.wake()
        return entry_id
    from ..transports.redis import RedisStreamsTransport

    if isinstance(transport, RedisStreamsTransport):
        key = transport.keys.topic(topic)
        raw = await transport._call(lambda: transport._r.xadd(key, fields))
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    raise UsageError(
        f"add_raw writes to the memory or the Redis transport, got {type(transport).__name__!r}"
    )
