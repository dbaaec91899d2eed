"""The relay queue of the Redis transport: outbox entries copied in the background.

A write that carries journal records (publish, ack, commit, dead letter, dead-letter
retry) returns once its change and its records are stored together in a topic's outbox
(:mod:`.redis_outbox`): the journal guarantee holds from then on, since a crash leaves
the entry for the repair. Copying the records to their runs is a second round trip;
waiting for it made every such write take two, and the runtime's acks came in smaller
batches. So the writes hand their entries to :class:`RelayQueue` and return; one task per
transport copies whatever is queued, all of it in one pipeline per round (one
:data:`~.redis_outbox.JOURNAL_SCRIPT` call per run), and queues the outbox deletions for
the next write's pipeline.

Order: a de-duplicated handler's output events are published by the relay, so a publish
that follows the commit waits for them (:meth:`RelayQueue.settle_events`, only while such
events are queued): one transport's events reach a topic in the order it wrote them.

Read-after-write: :meth:`RelayQueue.settle` waits until everything queued so far is
copied (or its copy failed, logged: the repair copies it later). The store calls it before
its own reads (``read_journal``, ``get_run``, ``list_runs``) and the runtime when it waits
for quiet or ends a run (:meth:`~agentbus.transports.contract.JournalStore.settle`).
Another process reading the journal may see a write's records a few milliseconds late.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .redis_outbox import OutboxEntry, Relay, run_scripts

if TYPE_CHECKING:
    from .redis_client import RedisClient

__all__ = ["RelayQueue"]

log = logging.getLogger("agentbus.runtime")

#: Entries copied per round at most (a round is one pipeline; the rest wait for the next).
_ROUND = 2_000


class RelayQueue:
    """Outbox entries waiting to be copied, and the task copying them (see the module)."""

    def __init__(self, client: RedisClient, relay: Relay) -> None:
        self._c = client
        self._relay = relay
        self._queue: list[OutboxEntry] = []
        self._task: asyncio.Task[None] | None = None
        # settle() waits for the entries queued before it, not for later ones (a busy
        # transport may never have an empty queue): counted in, counted out.
        self._submitted = 0
        self._finished = 0
        self._tick: asyncio.Future[None] | None = None
        # The count submitted up to the last entry holding a commit's output events.
        self._events_upto = 0

    def submit(self, entries: Sequence[OutboxEntry]) -> None:
        """Queue written outbox entries for copying (returns at once)."""
        if not entries or self._c.closed:
            return  # closed: they stay in the outbox, for the repair
        self._queue.extend(entries)
        self._submitted += len(entries)
        if any(entry.events for entry in entries):
            self._events_upto = self._submitted
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def pending(self) -> int:
        """Entries queued and not yet copied."""
        return len(self._queue)

    async def settle(self) -> None:
        """Wait until every entry queued so far has been copied (or failed to be)."""
        target = self._submitted
        while self._finished < target and self._task is not None:
            if self._tick is None:
                self._tick = asyncio.get_running_loop().create_future()
            # asyncio.wait: does not cancel the shared future if this caller is cancelled.
            await asyncio.wait([self._tick])

    @property
    def events_pending(self) -> bool:
        """Whether a commit's output events queued here are not published yet."""
        return self._finished < self._events_upto and self._task is not None

    async def settle_events(self) -> None:
        """Wait until the output events of every commit queued so far are published (or
        their copy failed): the publisher waits for this, so that a de-duplicated
        handler's outputs precede what the same transport publishes after them."""
        while self.events_pending:
            if self._tick is None:
                self._tick = asyncio.get_running_loop().create_future()
            await asyncio.wait([self._tick])

    def _ticked(self, finished: int) -> None:
        self._finished += finished
        tick, self._tick = self._tick, None
        if tick is not None and not tick.done():
            tick.set_result(None)

    async def aclose(self, timeout: float) -> None:
        """Copy what is queued (for up to ``timeout`` seconds), then stop."""
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait([task], timeout=timeout)
        if not done:
            task.cancel()  # what is left stays in the outbox, for the repair
            await asyncio.wait([task])

    async def _run(self) -> None:
        try:
            while self._queue and not self._c.closed:
                batch, self._queue = self._queue[:_ROUND], self._queue[_ROUND:]
                try:
                    await self._round(batch)
                finally:
                    self._ticked(len(batch))
        finally:
            self._task = None
            self._ticked(0)

    async def _round(self, batch: list[OutboxEntry]) -> None:
        relay = self._relay
        plan = relay.plan(batch)
        if not plan.calls:
            return
        unlinks = relay.take_unlinks()
        try:
            results = await self._c.call(lambda: run_scripts(self._c, plan.calls, unlinks))
        except Exception as exc:
            relay.restore(unlinks)  # not sent, or not known to be: try again later
            failure: BaseException | None = exc
        else:
            failure = relay.finish(plan, results)
        if failure is not None:
            log.warning(
                "copying %d outbox entries to their runs' journals failed (%s); they stay "
                "in the outbox, and the next repair pass copies them",
                len(batch),
                failure,
            )
