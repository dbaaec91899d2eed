"""The one way I/O is retried: a delay schedule and :func:`retry_io`.

Every loop that waits out the store (the read loops, the reply inbox, the writer, a
commit, a dead letter, the de-dup check, a handler during an outage) takes its delays
from here, so "how long do we wait, and what stops us" has one answer:

- ``TransportClosed`` is never retried: the store was closed on purpose, the caller
  decides what that means (usually: stop quietly);
- errors in ``retry_on`` (by default every ``TransportError``) are logged and retried
  after the next delay, however many times it takes;
- anything else propagates at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .errors import TransportClosed, TransportError

__all__ = ["Delays", "doubling", "jittered", "retry_io"]

log = logging.getLogger("agentbus.runtime")
T = TypeVar("T")

#: The delay before retry number ``n`` (1 for the first failure), in seconds.
Delays = Callable[[int], float]


def doubling(initial: float = 0.05, maximum: float = 2.0) -> Delays:
    """``initial`` seconds, doubling with each failure in a row up to ``maximum``."""

    def delay(n: int) -> float:
        return float(min(maximum, initial * 2 ** min(n - 1, 64)))

    return delay


def jittered(initial: float, maximum: float) -> Delays:
    """The top half of :func:`doubling` with full jitter (many waiters spread out)."""
    base = doubling(initial, maximum)

    def delay(n: int) -> float:
        d = base(n)
        return d / 2 + random.random() * d / 2

    return delay


async def retry_io(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    delays: Delays,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = TransportError,
    on_error: Callable[[BaseException], Awaitable[None]] | None = None,
) -> T:
    """``await op()`` until it returns; retry ``retry_on`` errors after ``delays(n)``.

    ``on_error`` is awaited with each retried error before the wait (it may raise to
    stop). Raises ``TransportClosed`` at once, and whatever else ``op`` raised.
    """
    failures = 0
    while True:
        try:
            return await op()
        except TransportClosed:
            raise
        except retry_on as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A cancellation swallowed below us (asyncio.wait_for in redis-py on
                # 3.11): stop instead of retrying forever.
                raise asyncio.CancelledError from exc
            failures += 1
            delay = delays(failures)
            if on_error is not None:
                await on_error(exc)
            log.warning("%s failed: %s; again in %.2fs", what, exc, delay)
            await asyncio.sleep(delay)
