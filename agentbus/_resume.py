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

from .errors import RequestTimeout, ResumeMismatch, TransportClosed

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
    """The calls and requests a crashed attempt recorded for one event and agent."""

    event_id: str
    agent: str
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: How many calls this attempt took from the tape.
    resumed: int = 0
    #: The requests the crashed attempt sent (their ``published`` records), by index.
    requests: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Replies in the journal, by correlation id (the reply envelopes, as recorded).
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The run, and where to read it again while a resumed request's reply is awaited.
    run_id: str = ""
    store: JournalStore | None = None
    #: Requests matched by the resumed attempt (their replies are still looked for).
    _matched: list[dict[str, Any]] = field(default_factory=list)
    #: The other events the crashed attempt published (``published`` records).
    events: list[dict[str, Any]] = field(default_factory=list)

    def published(self, topic: str, message_type: str, data: Any) -> str | None:
        """The id of an event like this one (topic, type, data) the crashed attempt
        published and the resumed attempt has not matched yet; ``None``: publish it.
        Each recorded event stands for one publish: a handler publishing the same
        event twice has both copies matched before a third goes out."""
        want = (topic, message_type, _canonical(data))
        for i, recorded in enumerate(self.events):
            event = recorded.get("event") or {}
            if (recorded.get("topic"), event.get("type"), _canonical(event.get("data"))) == want:
                del self.events[i]
                self.resumed += 1
                return str(recorded.get("event_id", ""))
        return None

    def sent(self, topic: str, message_type: str, data: Any) -> dict[str, Any] | None:
        """The crashed attempt's record of this request when it sent one like it (the same
        topic, type and data) not yet matched: its reply is then taken from the journal,
        or awaited, and it is not sent again. ``None``: send it.

        Matched by content, not by position: a coordinator's concurrent requests may
        reach the transport in another order after a resume, and an identical request's
        reply is the right answer whichever copy asked for it. A request the crashed
        attempt did not send is sent; one it sent that the resumed attempt does not is
        left (its reply unused)."""
        want = (topic, message_type, _canonical(data))
        for index in sorted(self.requests):
            recorded = self.requests[index]
            event = recorded.get("event") or {}
            if (recorded.get("topic"), event.get("type"), _canonical(event.get("data"))) == want:
                del self.requests[index]
                self._matched.append(recorded)
                self.resumed += 1
                return recorded
        return None

    async def reply(
        self, correlation: str, topic: str, timeout: float | None, take_timeout: float
    ) -> dict[str, Any]:
        """The reply to a request the crashed attempt sent: from the journal, or awaited
        there (it goes to the crashed process's inbox, and is journaled like any event).

        With a ``timeout`` it is waited for that long. Without one, as long as an agent
        holds the request (``delivered`` with no outcome yet: a crashed responder's
        delivery is claimed again); :class:`RequestTimeout` when no agent took it within
        ``take_timeout`` or one finished it without a reply."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = 0.05
        strikes = False
        while True:
            found = self.replies.get(correlation)
            if found is not None:
                return found
            waited = loop.time() - started
            if timeout is not None and waited >= timeout:
                raise RequestTimeout(topic, timeout, correlation, "resumed after a crash")
            if self.store is None:
                raise RequestTimeout(topic, round(waited, 1), correlation, "journal not readable")
            records = await self.store.read_journal(self.run_id)
            self._scan_replies(records)
            if correlation in self.replies:
                continue
            if timeout is None:
                request_id = self._request_id(correlation)
                reason = _unanswered(records, request_id, waited >= take_timeout)
                # Twice in a row: a reply relayed a moment after its handler's outcome
                # (another outbox) is not taken for a missing one.
                if reason is not None and strikes:
                    raise RequestTimeout(topic, round(waited, 1), correlation, reason)
                strikes = reason is not None
            await asyncio.sleep(delay if timeout is None else min(delay, timeout - waited))
            delay = min(delay * 2, 1.0)

    def _request_id(self, correlation: str) -> str:
        for rec in [*self.requests.values(), *self._matched]:
            if (rec.get("event") or {}).get("correlationid") == correlation:
                return str(rec.get("event_id", ""))
        return ""

    def _scan_replies(self, records: list[JournalRecord]) -> None:
        sent = [*self.requests.values(), *self._matched]
        wanted = {(r.get("event") or {}).get("correlationid") for r in sent}
        for rec in records:
            event = rec.record.get("event") if rec.kind == "published" else None
            if isinstance(event, dict) and not event.get("replyto"):
                correlation = event.get("correlationid")
                if correlation in wanted:
                    self.replies[str(correlation)] = event

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


def _unanswered(records: list[JournalRecord], request_id: str, overdue: bool) -> str | None:
    """Why a resumed request's reply will not come (from the journal), or ``None``."""
    delivered = False
    for rec in records:
        if rec.record.get("event_id") != request_id:
            continue
        if rec.kind == "delivered":
            delivered = True
        elif rec.kind in OUTCOMES - {"retried"}:
            # Its reply (an error reply for a failed one) is journaled before this.
            return f"its handler ended it ({rec.kind!r}) and no reply is in the journal"
    if not delivered and overdue:
        return "no agent has taken it"
    return None


def tape_from_records(records: list[JournalRecord], event_id: str, agent: str) -> ResumeTape:
    """The calls and requests made for ``event_id`` by ``agent`` after its last outcome
    record, and the replies journaled so far."""
    tape = ResumeTape(event_id, agent)
    for rec in records:
        r = rec.record
        if rec.kind == "published":
            event = r.get("event") or {}
            if event.get("causationid") == event_id and r.get("agent") == agent:
                if "request_index" in r:
                    tape.requests[int(r["request_index"])] = r
                else:
                    tape.events.append(r)
            continue
        if r.get("event_id") != event_id or r.get("agent") != agent:
            continue
        if rec.kind in OUTCOMES:
            # An attempt that ended: its calls and requests are not resumed.
            tape.calls.clear()
            tape.requests.clear()
            tape.events.clear()
        elif rec.kind in ("model_call", "tool_call") and "call_index" in r:
            # A call resumed before (a second crash) is recorded again: same answer.
            tape.calls[int(r["call_index"])] = {**r, "kind": rec.kind}
    tape._scan_replies(records)
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
        tape.run_id, tape.store = run_id, self._store
        return tape if tape.calls or tape.requests or tape.events else None

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
