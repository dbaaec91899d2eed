"""A watcher's local copy of a sequenced, event-sourced log (a board, a ledger).

Coordinators number the events they publish (1, 2, 3, ...) and tell watchers which
number a question refers to ("board version 7", "ledger version 12"). A watcher folds
the events it receives and, before answering, waits until it holds every event up to
that number, so its answer depends on exactly the state the coordinator meant, never on
delivery timing. Handlers run concurrently, so events may be added out of order; the
view keeps them by number.

A watcher that started late (or restarted) never receives the events published before
its subscription existed; :meth:`SequencedView.upto` then reads them from the run's
journal, which holds every published event.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from agentbus import Context, Message

__all__ = ["SequencedView", "StaleView"]

E = TypeVar("E", bound=Message)


class StaleView(Exception):
    """The events up to a version could not be gathered, not even from the journal."""


class SequencedView(Generic[E]):
    """Events of type ``kind`` numbered by ``number(event)``, kept per run.

    ``topic`` is where they are published (used to read them back from the journal).
    At most ``keep_runs`` runs are remembered; the oldest is forgotten first.
    """

    def __init__(
        self,
        kind: type[E],
        topic: str,
        number: Callable[[E], int],
        *,
        keep_runs: int = 32,
    ) -> None:
        self.kind = kind
        self.topic = topic
        self._number = number
        self._keep = keep_runs
        self._runs: OrderedDict[str, dict[int, E]] = OrderedDict()
        self._changed = asyncio.Condition()

    def _events(self, run_id: str) -> dict[int, E]:
        events = self._runs.get(run_id)
        if events is None:
            events = self._runs[run_id] = {}
            while len(self._runs) > self._keep:
                self._runs.popitem(last=False)
        self._runs.move_to_end(run_id)
        return events

    async def add(self, run_id: str, event: E) -> None:
        """Record ``event`` (a redelivered duplicate simply replaces itself)."""
        async with self._changed:
            self._events(run_id)[self._number(event)] = event
            self._changed.notify_all()

    def _complete(self, run_id: str, version: int) -> list[E] | None:
        events = self._runs.get(run_id, {})
        if all(n in events for n in range(1, version + 1)):
            return [events[n] for n in range(1, version + 1)]
        return None

    async def upto(self, ctx: Context, version: int, *, timeout: float = 2.0) -> list[E]:
        """Events 1..``version`` of the current run, in order.

        Waits up to ``timeout`` seconds for them to arrive, then reads the missing ones
        from the run's journal. Raises :class:`StaleView` when even the journal lacks
        them, and :class:`ValueError` outside a run.
        """
        run_id = ctx.run_id
        if run_id is None:
            raise ValueError("a sequenced view is read while handling an event of a run")
        if version <= 0:
            return []
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(
                        lambda: self._complete(run_id, version) is not None
                    )
        except TimeoutError:
            await self._catch_up(ctx, run_id)
        found = self._complete(run_id, version)
        if found is None:
            raise StaleView(
                f"events 1..{version} of {self.topic!r} in run {run_id!r} are neither "
                "delivered nor in the journal"
            )
        return found

    async def _catch_up(self, ctx: Context, run_id: str) -> None:
        events = await ctx.runtime.journal.events(run_id)
        recorded: Sequence[E] = [
            self.kind.model_validate(env.data or {})
            for env in events
            if env.topic == self.topic and env.type == self.kind.message_type
        ]
        for event in recorded:
            await self.add(run_id, event)
