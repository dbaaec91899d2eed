"""Runs an agent's deliveries: inline one after another, in a task of their own when needed.

A task per delivery is what the obvious design costs: creating it, scheduling its first
step through the event loop, its done callback. Most handlers never suspend (acks and
journal records are queued, not awaited), so the task buys nothing for them, and it
cost more than a no-op handler itself (about 4.5 µs against 0.5 µs, measured in
``benchmarks/README.md``).

Here one *drainer* task takes queued deliveries and runs each handler's first step
inline, in a fresh copy of the contextvars context. A handler that finishes there costs
no task at all. A handler that suspends keeps the drainer as its own task, to the end,
and a new drainer takes over the queue. So a handler always runs inside one task that
is its own for its whole life: ``asyncio.current_task()``, ``asyncio.timeout`` and anyio
cancel scopes (httpx) see the right task, which is what hand-driving the first step from
the read loop got wrong. Python 3.12's eager tasks save the scheduling step but still
create a task per delivery.

A runner given ``key_of`` (a partitioned topic's) keeps deliveries with the same key in
order: one starts only when the one before it has ended (acked, committed or
dead-lettered, retries included); the others wait in a chain per key, counted as queued.
Different keys still run concurrently.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import Any

from .errors import TransportError
from .transports import Delivery

__all__ = ["Runner"]

log = logging.getLogger("agentbus.runtime")

Key = tuple[str, str]
#: How long a drainer runs handlers inline before it lets the event loop run other work.
_SLICE_S = 0.005
#: The queue of a runner that never queued anything (shared, always empty).
_EMPTY: deque[Delivery] = deque(maxlen=0)


class Runner:
    """At most ``concurrency`` deliveries queued or in progress, run by ``dispatch``.

    One per hosted agent instance, so an idle one stays small: the queue, its key set and
    the event are made on first use.
    """

    __slots__ = (
        "_chains",
        "_dispatch",
        "_drainer",
        "_key_of",
        "_keys",
        "_queued",
        "_ready",
        "_released",
        "_suspended",
        "concurrency",
    )

    def __init__(
        self,
        dispatch: Callable[[Delivery], Coroutine[Any, Any, None]],
        concurrency: int,
        released: asyncio.Event | None = None,
        key_of: Callable[[Delivery], str] | None = None,
    ) -> None:
        self._dispatch = dispatch
        self._key_of = key_of
        #: Per ordering key, the deliveries waiting for the one in progress (made on use).
        self._chains: dict[str, deque[Delivery]] = {}
        #: The ordering key of each delivery queued, waiting or in progress.
        self._keys: dict[Key, str] = {}
        self.concurrency = concurrency
        self._ready: deque[Delivery] = _EMPTY
        self._queued: set[Key] = set()
        #: Handlers that suspended: their task and when they started.
        self._suspended: dict[Key, tuple[asyncio.Task[None], float]] = {}
        self._drainer: asyncio.Task[None] | None = None
        #: Set whenever a handler finishes; several runners may share one (a reader that
        #: waits for room in any of them).
        self._released: asyncio.Event | None = released

    # -- what the read loop asks -------------------------------------------------------------
    @property
    def busy(self) -> int:
        """Deliveries queued or being handled."""
        return (
            len(self._ready) + len(self._suspended) + (self._drainer is not None) + self._chained()
        )

    def _chained(self) -> int:
        return len(self._keys) - len(self._chains) if self._chains else 0

    def free(self) -> int:
        """Slots for more deliveries (at least 1, so a read always asks for something)."""
        return max(1, self.room())

    def room(self) -> int:
        """Slots for more deliveries (0 or less when full)."""
        return self.concurrency - len(self._ready) - len(self._suspended) - self._chained()

    def holds(self, topic: str) -> bool:
        """Whether a delivery of ``topic`` (a stream) is queued, waiting or being handled."""
        return any(t == topic for t, _ in (*self._queued, *self._suspended, *self._keys))

    async def wait_free(self, n: int) -> None:
        """Wait until ``n`` more deliveries may be queued."""
        while self.room() < n:
            if self._released is None:
                self._released = asyncio.Event()
            await self._released.wait()
            self._released.clear()

    def suspended(self) -> Iterable[tuple[Key, float]]:
        """Handlers in progress past their first step, with their start times."""
        return [(key, started) for key, (_, started) in self._suspended.items()]

    def interrupt(self, key: Key) -> bool:
        """Cancel the suspended handler of ``key`` (its own task); False if none is."""
        held = self._suspended.get(key)
        if held is None:
            return False
        held[0].cancel()
        return True

    def submit(self, d: Delivery) -> None:
        """Queue ``d`` unless it is already queued or being handled."""
        key = (d.topic, d.entry_id)
        if key in self._queued or key in self._suspended or key in self._keys:
            return
        if self._key_of is not None:
            order = self._keys[key] = self._key_of(d)
            chain = self._chains.get(order)
            if chain is not None:  # one with this key is in progress: wait for it
                chain.append(d)
                return
            self._chains[order] = deque()
        self._queue(d, key)

    def _queue(self, d: Delivery, key: Key) -> None:
        if self._ready is _EMPTY:
            self._ready = deque()
        self._ready.append(d)
        self._queued.add(key)
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    # -- running -------------------------------------------------------------------------------
    async def _drain(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        ready, queued = self._ready, self._queued
        loop = asyncio.get_running_loop()
        # Inline handlers do not yield to the event loop: after a slice of this long, the
        # rest of the queue goes to a new drainer, scheduled behind whatever else is due.
        deadline = loop.time() + _SLICE_S
        while ready:
            if loop.time() > deadline:
                self._drainer = loop.create_task(self._drain())
                return
            d = ready.popleft()
            key = (d.topic, d.entry_id)
            queued.discard(key)
            coro = self._dispatch(d)
            ctx = contextvars.copy_context()  # each handler its own, as a task would have
            try:
                yielded = ctx.run(coro.send, None)
            except StopIteration:
                self._release(key)
                continue
            except asyncio.CancelledError:
                # The handler cancelled itself: as a task of its own would have been. Its
                # entry stays pending; the rest of the queue is not affected.
                log.warning("handling %s/%s was cancelled", d.topic, d.entry_id)
                self._release(key)
                continue
            except Exception as exc:
                _report(d, exc)
                self._release(key)
                continue
            except BaseException:  # KeyboardInterrupt, SystemExit: let it end the process,
                self._drainer = None  # but never leave a dead drainer in charge of the queue
                raise
            # The handler suspended: this task is now its task until it ends; the rest of
            # the queue goes to a new drainer.
            self._suspended[key] = (me, time.monotonic())
            self._drainer = None
            if ready:
                self._drainer = asyncio.get_running_loop().create_task(self._drain())
            ended = False
            try:
                await _resume(ctx, coro, yielded)
                ended = True
            except asyncio.CancelledError:
                raise  # shutdown: the entry stays pending for a later delivery
            except Exception as exc:
                _report(d, exc)
                ended = True
            finally:
                del self._suspended[key]
                # On shutdown the next of its key must not start: it stays pending too.
                self._release(key, follow=ended)
            return
        self._drainer = None

    def _release(self, key: Key, *, follow: bool = True) -> None:
        if self._keys:
            order = self._keys.pop(key, None)
            if order is not None:
                chain = self._chains[order]
                if chain and follow:
                    d = chain.popleft()
                    self._queue(d, (d.topic, d.entry_id))
                else:  # ended, or left pending on shutdown with those behind it
                    for waiting in self._chains.pop(order):
                        self._keys.pop((waiting.topic, waiting.entry_id), None)
        if self._released is not None:
            self._released.set()

    async def finish(self, grace: float) -> int:
        """Wait up to ``grace`` s for queued and running handlers; cancel the rest.

        Returns how many were cancelled or never started (their entries stay pending).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while (tasks := self._tasks()) and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(tasks, timeout=remaining)
        left = len(self._ready) + len(self._suspended) + self._chained()
        self._ready = _EMPTY
        self._queued.clear()
        self._chains.clear()
        self._keys.clear()
        tasks = self._tasks()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        return left

    def _tasks(self) -> set[asyncio.Task[None]]:
        tasks = {t for t, _ in self._suspended.values()}
        if self._drainer is not None:
            tasks.add(self._drainer)
        return tasks


def _report(d: Delivery, exc: BaseException) -> None:
    if isinstance(exc, TransportError):
        # E.g. the de-dup check failed during an outage. The entry stays pending and
        # is claimed again after the visibility timeout: late, never lost.
        log.warning("left %s/%s pending: %s", d.topic, d.entry_id, exc)
    else:
        log.error("handling %s/%s failed", d.topic, d.entry_id, exc_info=exc)


@types.coroutine
def _resume(
    ctx: contextvars.Context, coro: Coroutine[Any, Any, None], yielded: Any
) -> Generator[Any, Any, None]:
    """Continue ``coro`` (suspended, having yielded ``yielded``) inside ``ctx``.

    The enclosing task waits on what we yield (a future, or ``None`` for a bare yield)
    and sends back what it would have sent ``coro`` itself: a value, or an exception to
    throw in (a cancellation, a failed future).
    """
    while True:
        try:
            value = yield yielded
        except BaseException as exc:
            try:
                yielded = ctx.run(coro.throw, exc)
            except StopIteration:
                return
            continue
        try:
            yielded = ctx.run(coro.send, value)
        except StopIteration:
            return
