"""Waiting until a runtime has come to rest (:meth:`agentbus.Runtime.idle`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .transports import Admin

__all__ = ["until_quiet"]


async def until_quiet(
    busy: Callable[[], bool],
    flush: Callable[[], Awaitable[None]],
    timeout: float,
    *,
    drained: Admin | None = None,
) -> None:
    """Wait until ``busy()`` is false three checks in a row, flushing before each check;
    with ``drained``, also until every consumer group that admin lists has read and
    acknowledged every entry.

    Raises ``TimeoutError`` when that has not happened within ``timeout`` seconds.
    """
    # A handler's entry stays pending until its ack is written, and what it publishes
    # is stored before it returns; so quiet three times in a row means at rest. Asked to
    # check the store too (nothing pending, no lag), two looks 10 ms apart are enough:
    # replay waits here once per run, and longer waits showed in its throughput.
    needed, interval = (3, 0.02) if drained is None else (2, 0.01)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    quiet = 0
    while quiet < needed:
        if loop.time() > deadline:
            raise TimeoutError(f"the runtime was still busy after {timeout}s")
        await flush()
        still = busy() or (drained is not None and await _unconsumed(drained))
        quiet = 0 if still else quiet + 1
        await asyncio.sleep(interval)
    await flush()


async def _unconsumed(admin: Admin) -> bool:
    return any(g.pending or g.lag for t in await admin.topics() for g in t.groups)
