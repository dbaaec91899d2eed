"""Which recorded calls a redelivered attempt resumes, and how a mismatch is told."""

from __future__ import annotations

from typing import Any

import pytest

from agentbus import AgentBusError, ResumeMismatch
from agentbus._resume import tape_from_records
from agentbus.transports import JournalRecord


def rec(seq: int, kind: str, **fields: Any) -> JournalRecord:
    return JournalRecord(str(seq), "r1", {"kind": kind, "time": 0.0, **fields})


def call(
    seq: int, index: int, *, agent: str = "a", event: str = "e1", **extra: Any
) -> JournalRecord:
    fields: dict[str, Any] = {
        "name": "think",
        "agent": agent,
        "event_id": event,
        "call_index": index,
        "request": {"q": index},
        "substituted": False,
        "response": {"n": index},
    }
    fields.update(extra)
    return rec(seq, "tool_call", **fields)


def test_only_the_calls_after_the_last_outcome_are_resumed() -> None:
    records = [
        rec(1, "delivered", event_id="e1", agent="a", attempt=1),
        call(2, 0),
        rec(3, "failed", event_id="e1", agent="a"),
        rec(4, "retried", event_id="e1", agent="a"),
        call(5, 0, response={"n": "second"}),
        call(6, 1),
        call(7, 0, agent="other"),  # another agent's delivery of the event
        call(8, 2, event="e2"),  # another event
    ]
    tape = tape_from_records(records, "e1", "a")
    assert sorted(tape.calls) == [0, 1]
    assert tape.answer("tool", "think", {"q": 0}, 0) == {"n": "second"}
    assert tape.answer("tool", "think", {"q": 2}, 2) is None  # beyond the recording: live
    assert tape.resumed == 1


def test_a_handled_event_resumes_nothing() -> None:
    records = [call(1, 0), call(2, 1), rec(3, "handled", event_id="e1", agent="a")]
    assert tape_from_records(records, "e1", "a").calls == {}


def test_a_recorded_failure_is_made_again() -> None:
    tape = tape_from_records([call(1, 0, response=None, error="boom")], "e1", "a")
    assert tape.answer("tool", "think", {"q": 0}, 0) is None
    assert tape.resumed == 0


@pytest.mark.parametrize(
    ("kind", "name", "request_", "said"),
    [
        ("model", "think", {"q": 0}, "made a model call 'think' as call #0"),
        ("tool", "search", {"q": 0}, "tool call 'search'"),
        ("tool", "think", {"q": 9}, "different request"),
    ],
)
def test_another_call_at_a_recorded_index_is_a_mismatch(
    kind: Any, name: str, request_: dict[str, Any], said: str
) -> None:
    tape = tape_from_records([call(1, 0)], "e1", "a")
    with pytest.raises(ResumeMismatch, match=said) as caught:
        tape.answer(kind, name, request_, 0)
    assert isinstance(caught.value, AgentBusError)


def test_requests_compare_as_json() -> None:
    tape = tape_from_records([call(1, 0, request={"q": [1, 2], "k": "v"})], "e1", "a")
    assert tape.answer("tool", "think", {"k": "v", "q": (1, 2)}, 0) == {"n": 0}


def sent(seq: int, event_id: str, topic: str, data: dict[str, Any], **extra: Any) -> JournalRecord:
    event = {"id": event_id, "type": "t.Ask", "data": data, "causationid": "e1"}
    event.update(extra.pop("event", {}))
    return rec(seq, "published", event_id=event_id, topic=topic, agent="a", event=event, **extra)


def test_requests_are_matched_by_content_and_their_replies_found() -> None:
    records = [
        sent(1, "q0", "work", {"n": 0}, request_index=0, event={"correlationid": "c0", "replyto": "_inbox.x"}),
        sent(2, "q1", "work", {"n": 1}, request_index=1, event={"correlationid": "c1", "replyto": "_inbox.x"}),
        rec(3, "published", event_id="r1", topic="_inbox.x", agent="w",
            event={"id": "r1", "type": "t.Done", "data": {}, "correlationid": "c1", "causationid": "q1"}),
        sent(4, "n0", "notes", {"note": "x"}),
    ]  # fmt: skip
    tape = tape_from_records(records, "e1", "a")
    # The resumed attempt asks in another order: each finds its own record.
    assert tape.sent("work", "t.Ask", {"n": 1})["event_id"] == "q1"
    assert tape.sent("work", "t.Ask", {"n": 0})["event_id"] == "q0"
    assert tape.sent("work", "t.Ask", {"n": 0}) is None  # a third one is sent
    assert tape.sent("work", "t.Ask", {"n": 2}) is None  # so is one never sent
    assert set(tape.replies) == {"c1"}
    assert tape.published("notes", "t.Ask", {"note": "x"}) == "n0"
    assert tape.published("notes", "t.Ask", {"note": "x"}) is None


def test_an_outcome_ends_the_requests_and_events_of_its_attempt() -> None:
    records = [
        sent(1, "q0", "work", {"n": 0}, request_index=0, event={"correlationid": "c0"}),
        sent(2, "n0", "notes", {"note": "x"}),
        rec(3, "retried", event_id="e1", agent="a"),
    ]
    tape = tape_from_records(records, "e1", "a")
    assert (tape.requests, tape.events) == ({}, [])
