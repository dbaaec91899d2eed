"""Cancelling a run everywhere: its status is shared, each process stops its own handlers.

The run's status (``cancelled``) lives in the run's metadata in the store, so every
process, including one started after the cancel, can read it. Each runtime keeps the
ids of the runs it knows are cancelled (a set: a lookup per delivery, no round trip), and
a poll that, only while handlers of some run are in flight here, reads those runs'
statuses (one ``get_run`` per run, a few times a second) and cancels the handlers of a
run found cancelled. See docs/durability.md, "Cancelling a run".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from .budget import BUDGET_EXCEEDED, budget_limits
from .errors import RunCancelled
from .journal import record
from .transports import JournalEntry, JournalStore, RunInfo

__all__ = ["CANCELLED", "Cancels", "RunCancelled", "cancel_run"]

log = logging.getLogger("agentbus.runtime")

#: A cancelled run's status.
CANCELLED = "cancelled"
#: How often a process reads the status of the runs it has handlers of in flight.
POLL_S = 0.25
#: Why the handlers and queued events of a run past its budget's deadline were stopped.
DEADLINE_PASSED = "run deadline passed"


def _past_deadline(info: RunInfo) -> bool:
    deadline = (budget_limits(info.meta) or {}).get("deadline")
    return isinstance(deadline, (int, float)) and time.time() >= deadline


async def _deadline_passed(store: JournalStore, info: RunInfo) -> None:
    """End a running run whose budget deadline has passed: ``budget_exceeded``, with the
    record saying which limit (what a call past the deadline records, for a run whose
    handlers make no calls, or are stuck in one)."""
    deadline = float((budget_limits(info.meta) or {})["deadline"])
    now = time.time()
    entry = record(
        BUDGET_EXCEEDED, limit="deadline", spent=now, attempted=0, allowed=deadline, call=""
    )
    await store.write_journal([JournalEntry(info.run_id, entry)])
    info.status = BUDGET_EXCEEDED
    await store.save_run(info)


class Cancels:
    """The runs this process knows are cancelled (or past their budget's deadline), and
    the poll that learns of new ones."""

    def __init__(self) -> None:
        #: Each stopped run, and why (what its handlers' and queued events' records say).
        self.runs: dict[str, str] = {}
        #: Called with a run id when the run is found cancelled (cancel its handlers).
        self.listeners: list[Callable[[str], None]] = []

    def cancelled(self, run_id: str, reason: str = "run cancelled") -> None:
        """Note ``run_id`` as stopped and stop its handlers in this process."""
        self.runs.setdefault(run_id, reason)
        for listener in self.listeners:
            listener(run_id)

    async def poll(self, store: JournalStore, active: Callable[[], Iterable[str]]) -> None:
        """Forever: read the status of the runs with handlers in flight (``active``)."""
        while True:
            await asyncio.sleep(POLL_S)
            runs = {r for r in active() if r not in self.runs}
            for run_id in runs:
                try:
                    info = await store.get_run(run_id)
                except Exception as exc:  # an outage: try again next round
                    log.debug("could not read run %s: %s", run_id, exc)
                    continue
                if info is None:
                    continue
                if info.status == CANCELLED:
                    self.cancelled(run_id)
                elif _past_deadline(info):
                    # Work of a run past its deadline stops, also work that outlived the
                    # run's own block; only a running run's status changes.
                    if info.status == "running":
                        await _deadline_passed(store, info)
                    self.cancelled(run_id, DEADLINE_PASSED)


async def cancel_run(store: JournalStore, run_id: str, *, by: str) -> bool:
    """Mark ``run_id`` cancelled in the store (with a ``run_finished`` record) and
    withdraw its open questions (a ``question_withdrawn`` record each).

    Returns False when the run had already ended (nothing done); raises ``KeyError``
    for an unknown run.
    """
    info = await store.get_run(run_id)
    if info is None:
        raise KeyError(run_id)
    if info.status != "running":
        return False
    info.status = CANCELLED
    info.ended = time.time()
    # As Run.finish notes: events counted later are work that outlived the run.
    info.meta["events_at_end"] = info.events
    await store.save_run(info)
    entries = [
        JournalEntry(
            run_id, record("run_finished", name=info.name, status=CANCELLED, cancelled_by=by)
        )
    ]
    # Its questions to people: nobody may answer them any more (ctx.ask_human).
    for q in await store.withdraw_questions(run_id, by=by, now=info.ended):
        withdrawn = record(
            "question_withdrawn",
            question_id=q.question_id,
            agent=q.agent,
            event_id=q.event_id,
            by=by,
        )
        entries.append(JournalEntry(run_id, withdrawn))
    await store.write_journal(entries)
    return True
