"""The transport contract: what the runtime needs from a message store.

A transport stores topics as append-only streams with consumer groups, pending lists,
delivery counts, claiming and dead-letter streams (the Redis Streams model), and keeps
the journal of every run. The runtime speaks only this interface; ``MemoryTransport``
and ``RedisStreamsTransport`` implement it and pass the same conformance suite
(``agentbus.testing.conformance``).

Unless noted, every method raises :class:`~agentbus.errors.TransportClosed` after
``aclose()`` and :class:`~agentbus.errors.TransportUnavailable` when the store cannot
be reached. Cancelling a blocking read leaves the transport usable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from .. import _json

if TYPE_CHECKING:
    from ..signing import Signer

__all__ = [
    "Ack",
    "DeadConsumer",
    "DeadLetter",
    "Delivery",
    "GroupInfo",
    "JournalEntry",
    "JournalRecord",
    "RunInfo",
    "TopicInfo",
    "Transport",
]


log = logging.getLogger("agentbus.runtime")

#: The stream field that carries the encoded envelope.
EVENT_FIELD = "e"


class Delivery:
    """One stream entry handed to a consumer.

    ``payload`` is the encoded envelope, or ``None`` when the entry has no event field
    (garbage written by something else); ``fields`` keeps the raw entry for dead-letters.
    ``delivery_count`` counts this delivery (1 for a first read).

    A transport may pass the entry's fields undecoded (``raw_fields``, keys as bytes):
    ``fields`` then decodes them on first use, which only dead-lettering needs.
    """

    __slots__ = ("_fields", "_raw", "delivery_count", "entry_id", "payload", "topic")

    def __init__(
        self,
        topic: str,
        entry_id: str,
        payload: bytes | None,
        fields: dict[str, bytes] | None = None,
        delivery_count: int = 1,
        *,
        raw_fields: Mapping[bytes, bytes] | Mapping[str, bytes] | None = None,
    ) -> None:
        self.topic = topic
        self.entry_id = entry_id
        self.payload = payload
        self.delivery_count = delivery_count
        self._fields = fields
        self._raw = raw_fields

    @property
    def fields(self) -> dict[str, bytes]:
        """The entry's fields, names decoded (just the event field for a plain event)."""
        if self._fields is None:
            if self._raw is not None:
                self._fields = {
                    k.decode("utf-8", "replace") if isinstance(k, bytes) else k: v
                    for k, v in self._raw.items()
                }
            else:
                self._fields = {} if self.payload is None else {EVENT_FIELD: self.payload}
        return self._fields

    def __repr__(self) -> str:
        return (
            f"Delivery(topic={self.topic!r}, entry_id={self.entry_id!r}, "
            f"delivery_count={self.delivery_count})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Delivery):
            return NotImplemented
        return (self.topic, self.entry_id, self.payload, self.fields, self.delivery_count) == (
            other.topic,
            other.entry_id,
            other.payload,
            other.fields,
            other.delivery_count,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaced


class Ack(NamedTuple):
    """Acknowledge ``entry_id`` of ``topic`` for ``group``.

    A named tuple rather than a frozen dataclass: one is built per delivery, and a
    frozen dataclass's ``__init__`` costs several times a tuple's.
    """

    topic: str
    group: str
    entry_id: str


@dataclass(slots=True)
class JournalEntry:
    """A journal record to append to a run's log. ``record`` must be JSON-serialisable.

    ``raw_event`` is an already encoded envelope stored under the record's ``event``
    key; splicing the bytes in saves encoding every published event twice.
    """

    run_id: str
    record: dict[str, Any]
    raw_event: bytes | None = None

    def encode(self) -> bytes:
        """The record as compact UTF-8 JSON."""
        body = _json.dumps(self.record)
        if self.raw_event is None:
            return body
        return body[:-1] + b',"event":' + self.raw_event + b"}"


def encode_chunk(entries: Sequence[JournalEntry], signer: Signer | None = None) -> bytes:
    """Several records as one JSON array, encoded in one call.

    One ``to_json`` call for the whole list instead of one per record. A record's raw
    event goes in as a placeholder string that cannot occur in real data (it carries a
    random per-process nonce), and the encoded events replace the placeholders after.

    With a ``signer`` (a transport's ``journal_signer``, set by a runtime that signs)
    each record is signed here, the one place every record passes on its way to a store.

    Never fails because of a record's content: a record that cannot be encoded (a lone
    surrogate, an object that is not JSON) is written with those values replaced by
    text (:func:`agentbus._json.jsonable`) and a warning logged, so one bad record
    neither blocks the others nor the acks written with them.
    """
    if signer is not None:
        entries = [_signed(e, signer) for e in entries]
    try:
        return _encode_chunk(entries)
    except Exception:  # PydanticSerializationError, ValueError: find the record(s)
        return _encode_chunk([_encodable(e) for e in entries])


def _signed(entry: JournalEntry, signer: Signer) -> JournalEntry:
    try:
        record = signer.sign_record(entry.run_id, entry.record, entry.raw_event)
    except Exception:  # it cannot be encoded: sign what will be stored instead
        entry = _encodable(entry)
        record = signer.sign_record(entry.run_id, entry.record, entry.raw_event)
    return JournalEntry(entry.run_id, record, entry.raw_event)


def _encodable(entry: JournalEntry) -> JournalEntry:
    try:
        _json.dumps(entry.record)
        return entry
    except Exception as exc:
        log.warning(
            "a %r record of run %r cannot be encoded as JSON (%s); "
            "recording it with the offending values as text",
            _json.jsonable(entry.record.get("kind")),
            _json.jsonable(entry.run_id),
            exc,
        )
        return JournalEntry(entry.run_id, _json.jsonable(entry.record), entry.raw_event)


def _encode_chunk(entries: Sequence[JournalEntry]) -> bytes:
    raws = [e.raw_event for e in entries if e.raw_event is not None]
    if not raws:
        return _json.dumps([e.record for e in entries])
    body = _json.dumps(
        [e.record if e.raw_event is None else {**e.record, "event": _MARK} for e in entries]
    )
    parts = body.split(_MARK_JSON)
    if len(parts) != len(raws) + 1:  # unreachable unless the nonce leaked; be correct anyway
        return b"[" + b",".join(e.encode() for e in entries) + b"]"
    out = [parts[0]]
    for raw, part in zip(raws, parts[1:], strict=True):
        out.append(raw)
        out.append(part)
    return b"".join(out)


_MARK = f"\x00agentbus-event-{os.urandom(16).hex()}\x00"
_MARK_JSON = _json.dumps(_MARK)


@dataclass(slots=True)
class JournalRecord:
    """A record read back from a run's journal, in append order (``seq``)."""

    seq: str
    run_id: str
    record: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.record.get("kind", ""))

    @property
    def time(self) -> float:
        return float(self.record.get("time", 0.0))


@dataclass(slots=True)
class RunInfo:
    """A run's metadata as indexed by the journal."""

    run_id: str
    name: str
    status: str = "running"
    started: float = 0.0
    ended: float | None = None
    events: int = 0
    records: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    #: Model tokens (input + output) recorded in the run's ``model_call`` records.
    tokens: int = 0

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    @property
    def late_events(self) -> int:
        """Events published into the run after it finished (work that outlived it).

        The run keeps the status it ended with; these are counted apart, from
        ``meta["events_at_end"]``, which :meth:`Run.finish` records.
        """
        at_end = self.meta.get("events_at_end")
        return 0 if not isinstance(at_end, int) else max(0, self.events - at_end)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "status": self.status,
            "started": self.started,
            "ended": self.ended,
            "duration": self.duration,
            "events": self.events,
            "records": self.records,
            "tokens": self.tokens,
            "late_events": self.late_events,
            "meta": self.meta,
        }


def tokens_of(record: dict[str, Any]) -> int:
    """Tokens a journal record accounts for (``model_call`` records with a usage)."""
    if record.get("kind") != "model_call":
        return 0
    usage = (record.get("response") or {}).get("usage") or {}
    return int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))


@dataclass(slots=True)
class DeadLetter:
    """An entry in a topic's dead-letter stream."""

    id: str
    topic: str
    origin_id: str
    reason: str
    error: str
    agent: str
    attempts: int
    time: float
    payload: str

    @classmethod
    def from_body(cls, dlq_id: str, topic: str, body: dict[str, Any]) -> DeadLetter:
        """Build from the JSON body the runtime stores in a dead-letter stream entry."""
        return cls(
            id=dlq_id,
            topic=topic,
            origin_id=str(body.get("origin_id", "")),
            reason=str(body.get("reason", "")),
            error=str(body.get("error", "")),
            agent=str(body.get("agent", "")),
            attempts=int(body.get("attempts", 0)),
            time=float(body.get("time", 0.0)),
            payload=str(body.get("payload", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "topic": self.topic,
            "origin_id": self.origin_id,
            "reason": self.reason,
            "error": self.error,
            "agent": self.agent,
            "attempts": self.attempts,
            "time": self.time,
            "payload": self.payload,
        }


@dataclass(slots=True)
class GroupInfo:
    """A consumer group on a topic."""

    name: str
    consumers: int
    pending: int
    lag: int | None


@dataclass(slots=True)
class TopicInfo:
    """What ``agentbus topics`` shows for one topic."""

    topic: str
    length: int
    groups: list[GroupInfo]
    dead_letters: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "length": self.length,
            "groups": [
                {"name": g.name, "consumers": g.consumers, "pending": g.pending, "lag": g.lag}
                for g in self.groups
            ],
            "dead_letters": self.dead_letters,
        }


@dataclass(slots=True)
class EntryState:
    """Where one entry of a topic stands in one consumer group (see ``entry_state``).

    ``delivered``: the group has read past the entry. ``consumer`` is set while the entry
    is pending (delivered, not acknowledged), with its ``idle_ms`` since the last delivery
    or lease renewal and its delivery count; a delivered entry with no consumer was acked.
    """

    group: str
    delivered: bool
    consumer: str | None = None
    idle_ms: int = 0
    deliveries: int = 0


@dataclass(slots=True)
class DeadConsumer:
    """A runtime that stopped announcing itself, with what it left behind.

    ``consumer``: its consumer name; ``idle``: seconds since it was last seen;
    ``groups``: its broadcast groups as ``(topic, group)``; ``inbox``: its reply inbox
    topic (``None`` when it had none). See :meth:`Transport.prune_dead_consumers`.
    """

    consumer: str
    idle: float
    groups: list[tuple[str, str]] = field(default_factory=list)
    inbox: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "consumer": self.consumer,
            "idle": round(self.idle, 3),
            "groups": [{"topic": t, "group": g} for t, g in self.groups],
            "inbox": self.inbox,
        }


@runtime_checkable
class Transport(Protocol):
    """A message store with consumer groups and a journal. See the module docstring."""

    #: The URL it was opened with, with any password removed.
    url: str

    async def connect(self) -> None:
        """Check the store answers. Raises ``TransportUnavailable`` naming the URL."""

    async def aclose(self) -> None:
        """Release connections. Idempotent."""

    # -- topics ---------------------------------------------------------------------
    async def publish(
        self, topic: str, payload: bytes, *, journal: Sequence[JournalEntry] = ()
    ) -> str:
        """Append an event; the journal entries are written atomically with it."""

    async def publish_many(
        self, items: Sequence[tuple[str, bytes]], *, journal: Sequence[JournalEntry] = ()
    ) -> list[str]:
        """Append several events (and journal entries) in one round trip."""

    async def create_group(self, topic: str, group: str, *, from_start: bool = True) -> None:
        """Create ``group`` on ``topic`` (and the topic) if missing.

        ``from_start`` delivers entries already in the topic; otherwise only new ones.
        """

    async def delete_group(self, topic: str, group: str) -> None:
        """Remove a consumer group and its pending list."""

    async def read_group(
        self,
        group: str,
        consumer: str,
        topics: Sequence[str],
        *,
        count: int,
        block_ms: int | None,
        pending: bool = False,
    ) -> list[Delivery]:
        """Read up to ``count`` entries per topic for ``consumer``.

        With ``pending`` it returns the consumer's own unacknowledged entries (counting
        a new delivery) instead of new ones and never blocks. ``block_ms=None`` does
        not block; otherwise it waits up to that long for new entries.
        """

    async def ack(
        self,
        acks: Sequence[Ack],
        *,
        journal: Sequence[JournalEntry] = (),
        mark: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Acknowledge entries, append journal entries and set de-duplication markers
        (``(key, ttl_seconds)``), all in one atomic round trip."""

    async def commit(
        self,
        ack: Ack,
        mark: tuple[str, int],
        *,
        publish: Sequence[tuple[str, bytes]] = (),
        journal: Sequence[JournalEntry] = (),
    ) -> bool:
        """Finish a de-duplicated delivery atomically (exactly-once effects).

        Unless the de-duplication marker ``mark`` (``(key, ttl_seconds)``) exists,
        append the events ``publish`` (``(topic, payload)``) and the ``journal``
        entries and set the marker; acknowledge the entry either way, all or nothing.
        Returns ``False`` when the marker existed (someone already committed this
        event: nothing was written but the ack). Safe to retry after a failure.
        """

    async def claim_idle(
        self,
        topic: str,
        group: str,
        consumer: str,
        *,
        min_idle_ms: int,
        count: int,
        cursor: str = "0-0",
    ) -> tuple[str, list[Delivery]]:
        """Take over entries pending longer than ``min_idle_ms`` from any consumer.

        Returns the cursor to continue from (``"0-0"`` when the scan wrapped around).
        """

    async def extend_lease(
        self, topic: str, group: str, consumer: str, entry_ids: Sequence[str]
    ) -> None:
        """Reset the idle time of entries ``consumer`` is still working on."""

    async def read_tail(
        self, topic: str, after: str, *, count: int, block_ms: int | None
    ) -> list[Delivery]:
        """Read entries after ``after`` without a group (for reply inboxes)."""

    async def delete_topic(self, topic: str) -> None:
        """Delete a topic with its groups."""

    async def entry_state(self, topic: str, entry_id: str) -> list[EntryState]:
        """Where entry ``entry_id`` of ``topic`` stands in each of the topic's groups
        (empty when the topic has none). Not on the hot path: requests ask it when a reply
        is late."""

    async def topics(self) -> list[TopicInfo]:
        """Every topic with its groups, pending counts, lag and dead-letter count."""

    # -- dead letters -----------------------------------------------------------------
    async def dead_letter(
        self,
        topic: str,
        group: str,
        entry_id: str,
        letter: dict[str, Any],
        *,
        journal: Sequence[JournalEntry] = (),
    ) -> None:
        """Move an entry to the topic's dead-letter stream and ack it, atomically."""

    async def dead_letters(self, topic: str, *, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead letters of ``topic``."""

    async def remove_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> int:
        """Delete the given dead letters (all when ``ids`` is ``None``); returns how many."""

    async def retry_dead_letter(
        self, topic: str, letter_id: str, *, journal: Sequence[JournalEntry] = ()
    ) -> str | None:
        """Re-publish the event dead letter ``letter_id`` holds and delete the letter.

        The letter's payload goes back to ``topic`` unchanged (the same bytes as the
        entry that was dead-lettered), together with ``journal``, atomically. Returns
        the new entry id, or ``None`` when the letter no longer exists (someone else
        retried or purged it): nothing is written then.
        """

    # -- retention ------------------------------------------------------------------------
    async def trim_acknowledged(self, topic: str, *, consumed: str | None = None) -> int:
        """Delete the entries of ``topic`` that no consumer group still needs.

        An entry is kept while any group has it pending or has not had it delivered
        yet; everything older than the oldest such entry, over all groups, is deleted.
        Consistent with concurrent reads, acks and publishes (nothing a group has not
        acknowledged is ever deleted). A topic without groups is left alone, unless
        ``consumed`` gives the entry id up to which its only reader (a reply inbox read
        without a group) has read. Returns how many entries were deleted.
        """

    async def remove_idle_consumers(self, topic: str, group: str, *, idle_ms: int) -> list[str]:
        """Remove the consumers of ``group`` idle longer than ``idle_ms`` with nothing pending.

        A consumer is idle since its last read, claim or lease renewal. One with pending
        entries is never removed (its entries would be lost to the group); a removed
        consumer that reads again is simply re-created. Returns the removed names.
        """

    async def prune_runs(self, *, before: float) -> list[str]:
        """Delete every run in which nothing was recorded since ``before`` (Unix time).

        A run's last activity is the latest of its start, its end and its last journal
        record; a pruned run loses its metadata, journal and counters. Returns the ids.
        """

    # -- presence: what a runtime owns, pruned when it stops announcing itself ------------
    async def announce(
        self,
        consumer: str,
        *,
        groups: Sequence[tuple[str, str]],
        inbox: str | None,
        every_ms: int,
    ) -> None:
        """Record that runtime ``consumer`` is alive now and owns the broadcast ``groups``
        (``(topic, group)``) and the reply ``inbox``, and will say so every ``every_ms``.

        Replaces what it announced before. Its own record, not a key shared by all
        runtimes, is what a heartbeat touches.
        """

    async def heartbeat(self, consumer: str) -> bool:
        """Record that ``consumer`` is alive now; ``False`` when it has no record (never
        announced, or pruned as dead): the caller announces itself again then."""

    async def withdraw(self, consumer: str) -> None:
        """Forget ``consumer`` (on a clean stop, after it removed what it owned)."""

    async def prune_dead_consumers(
        self, *, idle_ms: int, dry_run: bool = False
    ) -> list[DeadConsumer]:
        """Delete what runtimes not seen for ``idle_ms`` owned: their broadcast groups
        (with their pending lists) and reply inboxes, then their records.

        A runtime counts as dead only when it has not been seen for ``idle_ms`` and for
        three of its own announcement periods, whichever is longer, so a short
        ``idle_ms`` cannot remove a live runtime's groups. The check and the deletion are
        one step: a heartbeat in between keeps everything. ``dry_run`` lists them and
        deletes nothing. Returns the dead runtimes, oldest first.
        """

    # -- de-duplication -----------------------------------------------------------------
    async def is_marked(self, key: str) -> bool:
        """Whether a de-duplication marker set through :meth:`ack` exists."""

    # -- journal ---------------------------------------------------------------------------
    async def save_run(self, run: RunInfo) -> None:
        """Create or update a run's metadata (not its counters)."""

    async def write_journal(self, journal: Sequence[JournalEntry]) -> None:
        """Append journal entries on their own."""

    async def list_runs(self, *, limit: int = 100) -> list[RunInfo]:
        """Recorded runs, newest first."""

    async def get_run(self, run_id: str) -> RunInfo | None:
        """One run's metadata, or ``None``."""

    async def read_journal(self, run_id: str) -> list[JournalRecord]:
        """A run's journal records in the order they were written."""


def text(value: bytes | str) -> str:
    """``value`` as ``str`` (Redis replies are bytes; ids and names are UTF-8)."""
    return value.decode() if isinstance(value, bytes) else value
