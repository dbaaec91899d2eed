"""How a delivery ends: acknowledged, committed (de-duplicated) or dead-lettered.

Every delivery leaves through exactly one of the three, and each writes the run log the
same way: the records already queued for the run (its ``delivered``, ``failed`` and
``retried``) first, then the outcome's own record, in the same call as the outcome
itself. I/O is retried through :func:`~agentbus._retry.retry_io`: a store that is
unreachable is waited out, a closed one ends the attempt (the entry stays pending and
is delivered again).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ._delivery import ORPHAN_RUN, Services, Stamp
from ._json import jsonable
from ._requests import ERROR_TYPE
from ._retry import doubling, retry_io
from .envelope import Envelope
from .errors import TransportClosed
from .journal import record
from .redact import redact_text
from .transports import Ack, JournalEntry

if TYPE_CHECKING:
    from .transports import Delivery

__all__ = ["Outbox", "Outcomes"]

log = logging.getLogger("agentbus.runtime")

#: Delays between attempts at writing an outcome while the store is unreachable.
_DELAYS = doubling(0.05, 2.0)
#: Events a de-duplicated handler published, held for its commit.
Outbox = list[tuple[str, bytes, list[JournalEntry]]]


class Outcomes:
    """The three ways out of a delivery, for one subscription (one consumer group)."""

    __slots__ = (
        "_group",
        "_s",
        "_stamp",
    )

    def __init__(self, services: Services, stamp: Stamp, group: str) -> None:
        self._s = services
        self._stamp = stamp
        self._group = group

    def _ordered(self, records: list[JournalEntry]) -> list[JournalEntry]:
        """``records`` after the ones queued before them (none when not recording)."""
        if not self._s.writer.recording:
            return []
        return [*self._s.writer.take_records(), *records]

    # -- ack ------------------------------------------------------------------------------
    def ack(self, d: Delivery, outcome: JournalEntry | None) -> None:
        """Acknowledge ``d`` with its outcome record (both batched, queued ones first)."""
        self._s.writer.ack(Ack(d.topic, self._group, d.entry_id), outcome)

    # -- commit -----------------------------------------------------------------------------
    async def commit(
        self,
        d: Delivery,
        env: Envelope,
        dedupe_key: str,
        outbox: Outbox,
        handled: JournalEntry | None,
    ) -> None:
        """Write a de-duplicated handler's events, outcome, ack and marker atomically."""
        queued = self._s.writer.take_records()  # its "delivered" goes first
        records = [*queued, *(r for _, _, rs in outbox for r in rs)]
        if handled is not None:
            records.append(handled)
        if not self._s.writer.recording:
            records = []

        async def write() -> bool:
            return await self._s.transport.commit(
                Ack(d.topic, self._group, d.entry_id),
                (dedupe_key, self._s.settings.dedupe_ttl),
                publish=[(topic, payload) for topic, payload, _ in outbox],
                records=records,
            )

        try:
            fresh = await retry_io(write, what=f"committing {d.entry_id}", delays=_DELAYS)
        except TransportClosed:
            return
        if fresh:
            for topic, _, _ in outbox:
                self._s.metrics.published(topic)
        else:  # another consumer committed this event first: its effects stand alone
            for entry in [*queued, self._stamp.record(env, "duplicate")]:
                self._s.writer.record(entry)  # only the ack was written

    # -- dead letter --------------------------------------------------------------------------
    async def dead_letter(
        self,
        d: Delivery,
        env: Envelope | None,
        reason: str,
        error: str,
        attempts: int,
        reply: tuple[str, str] | None = None,
    ) -> None:
        """Move the entry to the dead letters; a requester gets the error reply at once.

        ``reply`` is the (error type, message) to answer with; by default the requester
        learns that its request was dead-lettered and why, instead of waiting its timeout.
        """
        # Text from hostile input or a handler's exception may not even be Unicode: a
        # dead letter must always be writable.
        error = jsonable(error)
        if env is not None and env.replyto:
            error_type, message = reply or ("DeadLettered", f"dead-lettered as {reason!r}: {error}")
            await self._reply_error(env, error_type, message)
        letter = self._letter(d, env, reason, error, attempts)
        log.warning("dead-lettered %s/%s for %s: %s", d.topic, d.entry_id, reason, error)
        run_id = env.runid if env is not None and env.runid else ORPHAN_RUN
        entry = JournalEntry(
            run_id,
            record(
                "dead_lettered",
                event_id=letter["event_id"],
                entry_id=d.entry_id,
                topic=d.topic,
                agent=self._stamp.agent,
                reason=reason,
                error=error,
                attempts=attempts,
                **self._stamp.replica,
            ),
        )
        await self._write_letter(d, letter, self._ordered([entry]))

    def _letter(
        self, d: Delivery, env: Envelope | None, reason: str, error: str, attempts: int
    ) -> dict[str, Any]:
        payload = (
            d.payload.decode("utf-8", "replace")
            if d.payload is not None
            else repr({k: v[:200] for k, v in d.fields.items()})
        )
        return {
            "origin_id": d.entry_id,
            "topic": d.topic,
            "event_id": env.id if env else None,
            "reason": reason,
            "error": error,
            "agent": self._stamp.agent,
            "group": self._group,
            "attempts": attempts,
            "time": time.time(),
            "payload": payload[: self._s.settings.max_event_bytes],
        }

    async def _write_letter(
        self, d: Delivery, letter: dict[str, Any], records: list[JournalEntry]
    ) -> None:
        """Store the letter (and ack) with ``records``; without them if they cannot be."""
        try:
            await self._try_letter(d, letter, records)
        except TransportClosed:
            return
        except Exception as exc:  # not the store's fault: something here cannot be written
            if not records:
                log.error("dead-lettering %s failed: %s; it stays pending", d.entry_id, exc)
                return
            log.error("dead-lettering %s with its records failed: %s", d.entry_id, exc)
            for entry in records:  # the writer sets aside a record it cannot write
                self._s.writer.record(entry)
            await self._write_letter(d, letter, [])

    async def _try_letter(
        self, d: Delivery, letter: dict[str, Any], records: list[JournalEntry]
    ) -> None:
        async def write() -> None:
            await self._s.transport.dead_letter(
                d.topic, self._group, d.entry_id, letter, records=records
            )

        await retry_io(write, what=f"dead-lettering {d.entry_id}", delays=_DELAYS)
        self._s.metrics.dead_lettered(self._stamp.agent, d.topic)

    async def _reply_error(self, env: Envelope, error_type: str, message: str) -> None:
        """Tell the requester at once that its request failed (a RemoteError there)."""
        assert env.replyto is not None
        agent = self._stamp.agent
        error = Envelope(
            type=ERROR_TYPE,
            source=agent,
            data={
                "error_type": jsonable(error_type),
                "message": redact_text(jsonable(message)),
                "agent": agent,
                "event_id": env.id,
            },
            correlationid=env.correlationid or env.id,
            # In the request's run (a dead letter is sent outside the handler's scope).
            runid=env.runid,
            causationid=env.id,
        )
        try:
            await self._s.bus.publish_envelope(env.replyto, error)
        except Exception as exc2:  # never keeps the event from its dead letter
            log.warning("could not send the error reply for %s: %s", env.id, exc2)
