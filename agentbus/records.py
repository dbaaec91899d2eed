"""The shape of each kind of record in a run's journal (see :mod:`agentbus.journal`).

Every record is a JSON object with ``kind`` and ``time``; the rest depends on the kind.
These ``TypedDict`` types say which fields each kind carries, for code that builds
records and code that reads them (inspect, replay). ``NotRequired`` fields appear only
where they apply (a broadcast delivery's ``group``, a failed call's ``error``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict, cast

if TYPE_CHECKING:
    from .envelope import Envelope

__all__ = [
    "RECORD_TYPES",
    "RESUMED_PUBLISH_STEP",
    "RESUMED_STEP",
    "BudgetExceededRecord",
    "CallRecord",
    "DeadLetteredRecord",
    "DeliveryRecord",
    "DlqRetriedRecord",
    "PublishedRecord",
    "QuestionRecord",
    "RunFinishedRecord",
    "RunStartedRecord",
    "StepRecord",
    "published",
]


class _Record(TypedDict):
    kind: str
    time: float


class RunStartedRecord(_Record):
    """``run_started``: a run began."""

    name: str
    meta: dict[str, Any]


class RunFinishedRecord(_Record):
    """``run_finished``: a run ended with ``status`` (and ``error`` when it failed).

    A cancelled run's (``status: cancelled``) says who cancelled it in ``cancelled_by``."""

    name: str
    status: str
    error: NotRequired[str]
    cancelled_by: NotRequired[str]


class PublishedRecord(_Record):
    """``published``: an event left an agent; ``event`` is the whole CloudEvent."""

    event_id: str
    type: str
    topic: str
    agent: str
    #: The topic's partition the event went to (a partitioned topic only).
    partition: NotRequired[int]
    #: A request a handler sent: which of its handling's requests (0, 1, ...), so that a
    #: resume after a crash finds it (agentbus._resume).
    request_index: NotRequired[int]
    event: NotRequired[dict[str, Any]]


class DeliveryRecord(_Record):
    """One step of a delivery's life: ``delivered``, ``handled``, ``failed``, ``retried``,
    ``ignored``, ``duplicate``, ``replied`` or ``parked`` (acknowledged while its
    handler waits for a person's answer)."""

    event_id: str
    type: str
    topic: str | None
    agent: str
    consumer: str
    group: NotRequired[str]  # a broadcast replica's own group
    attempt: NotRequired[int]  # delivered, handled, failed, retried
    duration_ms: NotRequired[float]  # handled, failed
    error: NotRequired[str]  # failed
    error_type: NotRequired[str]  # failed
    final: NotRequired[bool]  # failed
    delay_s: NotRequired[float]  # retried
    reason: NotRequired[str]  # ignored
    reply_id: NotRequired[str]  # replied
    question_id: NotRequired[str]  # parked
    woken: NotRequired[bool]  # delivered: re-published after its question was answered


class DeadLetteredRecord(_Record):
    """``dead_lettered``: the entry went to the topic's dead letters."""

    event_id: str | None
    entry_id: str
    topic: str
    agent: str
    reason: str
    error: str
    attempts: int
    consumer: str
    group: NotRequired[str]


class CallRecord(_Record):
    """``model_call`` / ``tool_call``: an external call made while handling an event."""

    name: str
    agent: str | None
    event_id: str | None
    call_index: int
    request: dict[str, Any]
    duration_ms: float
    substituted: bool
    #: Answered from the journal: the attempt resumed after a crash, and the crashed
    #: attempt's record of this call answered it (``substituted`` is set too).
    resumed: NotRequired[bool]
    response: NotRequired[dict[str, Any]]
    error: NotRequired[str]


class StepRecord(_Record, total=False):
    """``step``: a coordinator's progress note; its details are fields of their own."""

    step: str
    agent: str | None
    event_id: str | None


class DlqRetriedRecord(_Record):
    """``dlq_retried``: an operator re-published a dead-lettered event."""

    by: str
    dead_letter_id: str
    topic: str
    event_id: str | None
    origin_id: str
    reason: str
    agent: str


class BudgetExceededRecord(_Record):
    """``budget_exceeded``: a call was refused because it would pass a run's budget."""

    limit: str
    spent: float
    attempted: float
    allowed: float
    call: str
    agent: str | None
    event_id: str | None
    unpriced_model: NotRequired[str]


class QuestionRecord(_Record, total=False):
    """A question to a person (``ctx.ask_human``): ``question_asked`` (with the question,
    its type, summary, the expected answer's type and the deadline),
    ``question_answered`` (the ``answer`` and who gave it, ``by``),
    ``question_timed_out`` (its ``deadline`` passed) or ``question_withdrawn`` (its run
    was cancelled, ``by`` whom). On replay, answered from the recording
    (``substituted``)."""

    question_id: str
    agent: str
    event_id: str
    question_index: int
    question_type: str
    question: Any
    summary: str
    expect: str
    deadline: float | None
    answer: Any
    by: str
    substituted: bool


#: The shape of each record kind (the keys are :data:`agentbus.journal.RECORD_KINDS`).
RECORD_TYPES: dict[str, type[Any]] = {
    "run_started": RunStartedRecord,
    "run_finished": RunFinishedRecord,
    "published": PublishedRecord,
    **dict.fromkeys(
        ("delivered", "handled", "failed", "retried", "ignored", "duplicate", "replied"),
        DeliveryRecord,
    ),
    "dead_lettered": DeadLetteredRecord,
    "model_call": CallRecord,
    "tool_call": CallRecord,
    "step": StepRecord,
    "dlq_retried": DlqRetriedRecord,
    "budget_exceeded": BudgetExceededRecord,
    "parked": DeliveryRecord,
    **dict.fromkeys(
        ("question_asked", "question_answered", "question_timed_out", "question_withdrawn"),
        QuestionRecord,
    ),
}

_PUBLISHED: Literal["published"] = "published"

#: The ``step`` of a request a handler had sent before a crash, answered on its resume
#: from the journal (or awaited there) instead of being sent again.
RESUMED_STEP = "request.resumed"
#: The ``step`` of an event a handler had published before a crash, not published again
#: on its resume.
RESUMED_PUBLISH_STEP = "publish.resumed"


def published(
    env: Envelope, topic: str, partition: int | None = None, request_index: int | None = None
) -> dict[str, Any]:
    """The ``published`` record of ``env`` (the event itself is spliced in on write).

    ``topic`` is the topic published to, also for a partitioned one; ``partition`` its
    partition, if any (the stream is ``partition_stream(topic, partition)``);
    ``request_index`` numbers a handler's requests.
    """
    rec: PublishedRecord = {
        "kind": _PUBLISHED,
        "time": time.time(),
        "event_id": env.id,
        "type": env.type,
        "topic": topic,
        "agent": env.source,
    }
    if partition is not None:
        rec["partition"] = partition
    if request_index is not None:
        rec["request_index"] = request_index
    return cast(dict[str, Any], rec)
