"""Operating on dead letters: re-publishing them, journaled (what ``agentbus dlq retry`` does)."""

from __future__ import annotations

import getpass
import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .transports import DeadLetter, JournalEntry, Transport

__all__ = ["RetryOutcome", "operator_name", "retry_dead_letters"]

#: The run that records what concerns events without a run id (as the read loop does).
ORPHAN_RUN = "orphans"

#: Reasons whose letter does not hold the event as it was received: the payload is a
#: description of a non-event entry, lossily decoded bytes, or cut at the size limit.
NOT_REPUBLISHABLE = frozenset({"not an agentbus event", "invalid UTF-8", "event too large"})


@dataclass(slots=True)
class RetryOutcome:
    """What :func:`retry_dead_letters` did: re-published letters and skipped ones (why)."""

    retried: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def operator_name() -> str:
    """``user@host`` of this process, for the journal's record of who did what."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in the environment or the password database
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def retry_dead_letters(
    transport: Transport, topic: str, ids: Sequence[str] | None = None, *, by: str | None = None
) -> RetryOutcome:
    """Re-publish dead letters of ``topic`` (all when ``ids`` is ``None``), journaled.

    Each letter's event goes back to ``topic`` byte for byte (same event id, same
    signature) and the letter is deleted, atomically with a ``dlq_retried`` record in
    the event's run naming ``by`` (default: :func:`operator_name`), the time, the dead
    letter and the event. Letters that hold no re-publishable event (see
    :data:`NOT_REPUBLISHABLE`) are skipped with the reason; a letter removed meanwhile
    by someone else is skipped too. Raises ``TransportError``.
    """
    who = by or operator_name()
    letters = await transport.admin.dead_letters(topic, count=1_000_000)
    wanted = None if ids is None else set(ids)
    outcome = RetryOutcome()
    for letter in letters:
        if wanted is not None and letter.id not in wanted:
            continue
        if letter.reason in NOT_REPUBLISHABLE:
            outcome.skipped[letter.id] = (
                f"holds no re-publishable event (reason {letter.reason!r}); purge it instead"
            )
            continue
        run_id, event_id = _event_ids(letter)
        record = {
            "kind": "dlq_retried",
            "time": time.time(),
            "by": who,
            "dead_letter_id": letter.id,
            "topic": topic,
            "event_id": event_id,
            "origin_id": letter.origin_id,
            "reason": letter.reason,
            "agent": letter.agent,
        }
        entry = await transport.admin.retry_dead_letter(
            topic, letter.id, records=[JournalEntry(run_id, record)]
        )
        if entry is None:
            outcome.skipped[letter.id] = "gone (retried or purged meanwhile)"
        else:
            outcome.retried.append(letter.id)
    if wanted is not None:
        for missing in sorted(wanted - {d.id for d in letters}):
            outcome.skipped[missing] = f"no such dead letter on {topic!r}"
    return outcome


def _event_ids(letter: DeadLetter) -> tuple[str, str | None]:
    """The run and event id of the letter's event (the orphans run when it has none)."""
    try:
        event = json.loads(letter.payload)
    except ValueError:
        return ORPHAN_RUN, None
    if not isinstance(event, dict):
        return ORPHAN_RUN, None
    run_id, event_id = event.get("runid"), event.get("id")
    return (
        run_id if isinstance(run_id, str) and run_id else ORPHAN_RUN,
        event_id if isinstance(event_id, str) else None,
    )
