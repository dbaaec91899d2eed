"""The data a transport exchanges with the runtime: deliveries, acks, journal records.

The contract itself (the ``Broker``, ``JournalStore`` and ``Admin`` roles and the
``Transport`` that composes them) is in :mod:`agentbus.transports.contract`; the one
encoder of journal chunks in :mod:`agentbus.transports.chunks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .. import _json

__all__ = [
    "Ack",
    "DeadConsumer",
    "DeadLetter",
    "Delivery",
    "EntryState",
    "GroupInfo",
    "JournalEntry",
    "JournalRecord",
    "Question",
    "Reservation",
    "RunInfo",
    "TopicInfo",
    "entry_id_key",
]

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


@dataclass(frozen=True, slots=True)
class Reservation:
    """What :meth:`JournalStore.reserve` answered: ``granted`` (every amount fitted
    its limit and all were added) or not, ``over`` naming the first limit that did not
    fit, and ``spent``: the counters asked about after the call (before it when not
    granted)."""

    granted: bool
    spent: dict[str, float]
    over: str | None = None


#: What a question can be: waiting for its answer, answered, past its deadline
#: unanswered, or withdrawn (its run was cancelled).
QUESTION_STATUSES = ("open", "answered", "timed_out", "withdrawn")


@dataclass(slots=True)
class Question:
    """A question a handler asked a person (:meth:`~agentbus.Context.ask_human`), as the
    journal store keeps it while its delivery is parked.

    ``question_id`` is deterministic (the event, the agent, the handler's n-th question
    for that event), so the handler re-run after the answer finds the same question.
    ``stream`` and ``envelope`` are where the parked event came from and its bytes: the
    wake-up re-publishes them there. ``expect`` names the answer's type
    (``module:qualname``) and ``schema`` is its JSON schema, so that a process without
    the app's code (the CLI) can refuse a malformed answer. ``status`` is one of
    :data:`QUESTION_STATUSES`; ``closed`` is when it stopped being open, ``by`` who
    answered or withdrew it. ``claimed`` is when a runtime last claimed its wake-up,
    ``resumed`` when the wake-up was re-published (then it is done).
    """

    run_id: str
    question_id: str
    agent: str
    event_id: str
    stream: str
    envelope: bytes
    question_type: str
    question: Any
    summary: str
    expect: str
    schema: dict[str, Any]
    asked: float
    deadline: float | None = None
    status: str = "open"
    answer: Any = None
    closed: float | None = None
    by: str | None = None
    claimed: float | None = None
    resumed: float | None = None

    def data(self) -> dict[str, Any]:
        """The part that never changes once asked (how stores keep it, as JSON)."""
        return {
            "run_id": self.run_id,
            "question_id": self.question_id,
            "agent": self.agent,
            "event_id": self.event_id,
            "stream": self.stream,
            "envelope": self.envelope.decode("utf-8", "surrogateescape"),
            "question_type": self.question_type,
            "question": self.question,
            "summary": self.summary,
            "expect": self.expect,
            "schema": self.schema,
            "asked": self.asked,
            "deadline": self.deadline,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any], **state: Any) -> Question:
        """Inverse of :meth:`data`, with the mutable ``state`` fields."""
        fields = {k: v for k, v in data.items() if k != "envelope"}
        envelope = str(data.get("envelope", "")).encode("utf-8", "surrogateescape")
        return cls(envelope=envelope, **fields, **state)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``agentbus pending --json`` (without the parked event's bytes)."""
        out = self.data()
        del out["envelope"]
        out.update(
            status=self.status,
            answer=self.answer,
            closed=self.closed,
            by=self.by,
        )
        return out


def fits(spent: float, amount: float, limit: float) -> bool:
    """Whether ``amount`` more fits under ``limit``: a counter already at its limit
    takes nothing more, not even an amount of 0 (a model call whose tokens are not
    known in advance)."""
    return spent < limit and spent + amount <= limit


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
    """Tokens a journal record accounts for (``model_call`` records with a usage; not a
    resumed call's: the crashed attempt's record of it counted them)."""
    if record.get("kind") != "model_call" or record.get("resumed"):
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
    topic (``None`` when it had none). See ``Admin.prune_dead_consumers``
    (:mod:`agentbus.transports.contract`).
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


def text(value: bytes | str) -> str:
    """``value`` as ``str`` (Redis replies are bytes; ids and names are UTF-8)."""
    return value.decode() if isinstance(value, bytes) else value


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``"<ms>-<seq>"``, the sequence optional) as a sortable pair.

    The one parser of entry ids: ids compare as these pairs, never as strings.
    Raises ``ValueError`` for anything else.
    """
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
