"""Resume a delivery after a crash: answer the calls its crashed attempt already made.

When a consumer dies mid-handler, its entry stays pending and another consumer claims it
after the visibility timeout (``delivery_count > 1``). The crashed attempt left no outcome
(``handled``, ``failed``, ``retried``, ``dead_lettered``) for that event and agent, but the
``model_call`` / ``tool_call`` records it wrote are in the run's journal. The redelivered
attempt is given a :class:`ResumeTape` of them: the calls it makes at the same index are
answered from it (recorded with ``substituted`` and ``resumed``), later ones are live.
A call that differs from the recorded one (kind, name, redacted request) raises
:class:`~agentbus.errors.ResumeMismatch`, which fails the attempt.

The journal is read only for a redelivered delivery of an event in a run; first
deliveries never pay for it (nor run-less events, whose records share one big journal).
Records the crashed process wrote to a topic's outbox (Redis) but did not copy to the
run are copied first (:meth:`JournalStore.relay_pending`); records it never wrote at all
are not there, and those calls are made again. See ``docs/durability.md``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ResumeMismatch, TransportClosed

if TYPE_CHECKING:
    from ._bus import CallKind
    from .transports import JournalRecord, JournalStore

__all__ = ["OUTCOMES", "ResumeTape", "Resumer", "tape_from_records"]

log = logging.getLogger("agentbus.runtime")

#: The records that end an attempt: calls recorded before the last of them belong to an
#: attempt that finished (or failed), not to a crashed one.
OUTCOMES = frozenset({"handled", "failed", "retried", "dead_lettered", "duplicate", "ignored"})

#: Outbox entries at least this old are copied to their runs before a resume reads the
#: journal. A live writer copies its own within milliseconds; a crashed one's are older
#: than this unless the claim came within a second of the crash (then they are missed,
#: and those calls are made again).
RELAY_GRACE_S = 1.0


def _canonical(value: Any) -> str:
    # As recorded: the request went through JSON (tuples became lists, keys strings).
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass
class ResumeTape:
    """The calls a crashed attempt recorded for one event and agent, by call index."""

    event_id: str
    agent: str
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: How many calls this attempt took from the tape.
    resumed: int = 0

    def answer(
        self, kind: CallKind, name: str, shown: dict[str, Any], index: int
    ) -> dict[str, Any] | None:
        """The recorded response of call ``index``; ``None`` to make it live (nothing
        recorded there, or the recorded call failed). Raises :class:`ResumeMismatch`
        when the recorded call is another one."""
        recorded = self.calls.get(index)
        if recorded is None:
            return None
        was = (str(recorded.get("kind", "")).removesuffix("_call"), recorded.get("name"))
        if was != (kind, name):
            raise ResumeMismatch(
                f"{self.agent} resumed event {self.event_id} after a crash and made a {kind} "
                f"call {name!r} as call #{index}, but the crashed attempt made a {was[0]} "
                f"call {was[1]!r} there; a resumed handler must make the same calls in the "
                "same order"
            )
        if _canonical(recorded.get("request") or {}) != _canonical(shown):
            raise ResumeMismatch(
                f"{self.agent} resumed event {self.event_id} after a crash and its {kind} "
                f"call {name!r} #{index} sent a different request than the crashed attempt "
                "recorded; a resumed handler must make the same calls in the same order"
            )
        response = recorded.get("response")
        if not isinstance(response, dict):
            return None  # the crashed attempt's call failed: make it again
        self.resumed += 1
        return response


def tape_from_records(records: list[JournalRecord], event_id: str, agent: str) -> ResumeTape:
    """The calls made for ``event_id`` by ``agent`` after its last outcome record."""
    tape = ResumeTape(event_id, agent)
    for rec in records:
        r = rec.record
        if r.get("event_id") != event_id or r.get("agent") != agent:
            continue
        if rec.kind in OUTCOMES:
            tape.calls.clear()  # an attempt that ended: its calls are not resumed
        elif rec.kind in ("model_call", "tool_call") and "call_index" in r:
            # A call resumed before (a second crash) is recorded again: same answer.
            tape.calls[int(r["call_index"])] = {**r, "kind": rec.kind}
    return tape


class Resumer:
    """Reads the tapes of redelivered deliveries for one runtime.

    Deliveries claimed together (a crashed consumer's whole pending list, often of one
    run) share the work: one outbox repair scan, and one read of each run's journal
    started under :data:`RELAY_GRACE_S` ago. Reading a large run once per delivery made
    the claimed deliveries wait longer than their visibility timeout, so that other
    consumers claimed them again. A shared read started after the crash holds every
    record the crashed attempt wrote: the entry became claimable only a visibility
    timeout after the crash.
    """

    def __init__(self, store: JournalStore) -> None:
        self._store = store
        self._relay: asyncio.Task[int] | None = None
        self._relayed_at = float("-inf")
        #: Journal reads shared by the deliveries of one run claimed together.
        self._reads: dict[str, tuple[float, asyncio.Future[list[JournalRecord]]]] = {}

    async def tape(self, run_id: str, event_id: str, agent: str) -> ResumeTape | None:
        """The tape of a redelivered delivery; ``None`` when nothing is to be resumed or
        the journal cannot be read (then every call is made live, as before)."""
        try:
            await self._relay_once()
            records = await self._read(run_id)
        except TransportClosed:
            return None
        except Exception as exc:  # live calls cost money; a wrong answer would cost more
            log.warning(
                "could not read run %s to resume event %s (%s: %s); its calls are made again",
                run_id,
                event_id,
                type(exc).__name__,
                exc,
            )
            return None
        tape = tape_from_records(records, event_id, agent)
        return tape if tape.calls else None

    async def _read(self, run_id: str) -> list[JournalRecord]:
        now = time.monotonic()
        for key in [k for k, (at, _) in self._reads.items() if now - at >= RELAY_GRACE_S]:
            del self._reads[key]  # older reads may miss records: read again
        shared = self._reads.get(run_id)
        if shared is None:
            future = asyncio.ensure_future(self._store.read_journal(run_id))
            future.add_done_callback(_retrieve)
            shared = self._reads[run_id] = (now, future)
        try:
            return await asyncio.shield(shared[1])
        except BaseException:
            if self._reads.get(run_id) is shared and shared[1].done():
                del self._reads[run_id]  # a failed read is not shared with later ones
            raise

    async def _relay_once(self) -> None:
        if self._relay is None:
            if time.monotonic() - self._relayed_at < RELAY_GRACE_S:
                return  # a scan that started under a second ago saw what this one would
            self._relayed_at = time.monotonic()
            self._relay = asyncio.ensure_future(self._store.relay_pending(older_than=RELAY_GRACE_S))
            self._relay.add_done_callback(self._done)
        await asyncio.shield(self._relay)

    def _done(self, task: asyncio.Task[int]) -> None:
        if self._relay is task:
            self._relay = None
        if not task.cancelled():
            task.exception()  # retrieved: each waiter got it already


def _retrieve(future: asyncio.Future[list[JournalRecord]]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: each waiter got it already
