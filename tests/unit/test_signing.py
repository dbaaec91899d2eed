"""Signer: routing and freshness checks, malformed input, and journal record signatures."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import pytest

from agentbus import Envelope, MemoryTransport, Message, Runtime, Signer, UsageError
from agentbus.errors import SignatureError
from agentbus.inspect import build_trace, render_timeline, render_tree
from agentbus.signing import unverified_records
from agentbus.transports import JournalEntry

KEY = b"unit-signing-key-0123456789abcdef"
OTHER = b"unit-signing-other-0123456789abcd"


class Hi(Message, type="unit.sign.Hi"):
    text: str


def _signed(signer: Signer, topic: str = "t.a", **attrs: Any) -> Envelope:
    env = Envelope.for_message(Hi(text="x"), source="client", topic=topic, **attrs)
    signer.sign(env)
    return env


def _reason(fn: Any) -> str:
    with pytest.raises(SignatureError) as info:
        fn()
    return f"{info.value.reason}: {info.value.detail}"


def test_the_signed_topic_must_be_the_stream_read_from() -> None:
    signer = Signer({"k1": KEY}, "k1")
    env = _signed(signer, "t.a")
    signer.verify(env, topic="t.a")
    assert _reason(lambda: signer.verify(env, topic="t.b")) == (
        "topic mismatch: signed for topic 't.a' but read from 't.b'"
    )
    unrouted = Envelope.for_message(Hi(text="x"), source="client")
    signer.sign(unrouted)
    assert _reason(lambda: signer.verify(unrouted, topic="t.a")).startswith("topic mismatch")


def test_max_age_refuses_old_future_and_undated_events() -> None:
    signer = Signer({"k1": KEY}, "k1", max_age=30)
    env = _signed(signer)
    now = Envelope.decode(env.encode())  # round trip: what a receiver sees
    signer.verify(now)
    stamp = datetime.fromisoformat(str(env.time)).timestamp()
    signer.verify(env, now=stamp + 29)
    assert _reason(lambda: signer.verify(env, now=stamp + 31)).startswith("event too old: ")
    assert _reason(lambda: signer.verify(env, now=stamp - 31)).startswith(
        "event time in the future: "
    )
    undated = Envelope.for_message(Hi(text="x"), source="c", topic="t.a")
    undated.time = None
    signer.sign(undated)
    assert "needs a valid signed 'time', got None" in _reason(lambda: signer.verify(undated))
    garbled = _signed(signer)
    garbled.time = "yesterday"
    signer.sign(garbled)
    assert _reason(lambda: signer.verify(garbled)).startswith("event too old")
    Signer({"k1": KEY}, "k1").verify(garbled)  # no max_age: time is not judged


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "60"])
def test_max_age_must_be_a_positive_number(bad: Any) -> None:
    with pytest.raises(UsageError, match="max_age must be a positive number"):
        Signer({"k1": KEY}, "k1", max_age=bad)


def test_max_age_from_the_environment() -> None:
    keys = "k1:" + base64.b64encode(KEY).decode()
    signer = Signer.from_env({"AGENTBUS_SIGNING_KEYS": keys, "AGENTBUS_SIGNING_MAX_AGE": "90"})
    assert signer is not None
    assert signer.max_age == 90.0
    assert "max_age=90.0" in repr(signer)
    with pytest.raises(UsageError, match="AGENTBUS_SIGNING_MAX_AGE must be a number"):
        Signer.from_env({"AGENTBUS_SIGNING_KEYS": keys, "AGENTBUS_SIGNING_MAX_AGE": "soon"})


@pytest.mark.parametrize(
    "attrs",
    [
        {"id": "\ud800"},
        {"subject": "a\udfffb"},
        {"sig": "\ud800"},
        {"sig": "é" * 43},
    ],
)
def test_malformed_input_is_a_bad_signature_never_a_crash(attrs: dict[str, str]) -> None:
    signer = Signer({"k1": KEY}, "k1")
    obj = _signed(signer).to_dict()
    obj.update(attrs)
    env = Envelope.from_dict(obj)
    assert _reason(lambda: signer.verify(env, topic="t.a")).startswith("bad signature: ")


def test_records_are_bound_to_their_content_and_run() -> None:
    signer = Signer({"k1": KEY}, "k1")
    env = _signed(signer)
    raw = env.encode()
    record = {"kind": "published", "time": 1.5, "event_id": env.id, "topic": "t.a"}
    # Signed with the event as raw bytes, checked after a JSON round trip.
    stored = json.loads(JournalEntry("r1", signer.sign_record("r1", record, raw), raw).encode())
    signer.verify_record("r1", stored)
    assert "run 'r2'" in _reason(lambda: signer.verify_record("r2", stored))
    for change in ({"topic": "t.b"}, {"time": 1.6}, {"sigkid": "k1", "extra": 1}):
        altered = {**stored, **change}
        assert "does not match" in _reason(lambda a=altered: signer.verify_record("r1", a))
    tampered = json.loads(json.dumps(stored))
    tampered["event"]["data"]["text"] = "y"
    assert "does not match" in _reason(lambda: signer.verify_record("r1", tampered))
    assert "unsigned" in _reason(lambda: signer.verify_record("r1", record))
    stranger = Signer({"k9": OTHER}, "k9").sign_record("r1", record)
    assert "unknown signing key id 'k9'" in _reason(lambda: signer.verify_record("r1", stranger))
    # Re-signing replaces the old signature; a dict event signs like its bytes.
    again = signer.sign_record("r1", {**record, "event": env.to_dict()})
    assert again["sig"] == stored["sig"]


async def test_a_signing_runtime_signs_every_record_of_its_journal() -> None:
    signer = Signer({"k1": KEY}, "k1")
    transport = MemoryTransport()
    async with Runtime(transport=transport, signer=signer) as rt:
        async with rt.run("signed") as run:
            await run.publish("t.a", Hi(text="héllo\u2028"))
        records = await rt.journal.records(run.run_id)
        info = await rt.journal.run(run.run_id)
    assert {r.kind for r in records} == {"run_started", "published", "run_finished"}
    assert all(r.record["sigkid"] == "k1" for r in records)
    assert unverified_records(signer, run.run_id, records) == {}
    assert len(unverified_records(signer, "another-run", records)) == len(records)
    assert "all 3 journal records verified" in render_tree(
        build_trace(info, records, signer=signer)
    )
    # A record written without the key is flagged in the trace.
    await transport.connect()
    forged = await _write_and_read(transport, run.run_id, {"kind": "step", "step": "x"})
    trace = build_trace(info, forged, signer=signer)
    assert trace.signatures is not None
    assert [u["kind"] for u in trace.signatures["unverified"]] == ["step"]
    assert "⚠ 1 of 4 journal records FAIL" in render_tree(trace)
    assert "FAIL" in render_timeline(trace)
    assert build_trace(info, forged).signatures is None  # no signer: not checked
    await transport.aclose()


async def _write_and_read(
    transport: MemoryTransport, run_id: str, record: dict[str, Any]
) -> list[Any]:
    transport.store.signer = None  # an agent without the key writing to the journal
    await transport.store.write_journal([JournalEntry(run_id, {"time": 2.0, **record})])
    return await transport.store.read_journal(run_id)
