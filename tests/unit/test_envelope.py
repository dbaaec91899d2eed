"""The wire format: CloudEvents 1.0 JSON envelopes, decoding failures, sizes and ids."""

from __future__ import annotations

import json
import time

import pytest

from agentbus import (
    DEFAULT_MAX_EVENT_BYTES,
    DecodeError,
    Envelope,
    Message,
    MessageTooLarge,
    UsageError,
    decode_data,
    new_id,
)
from agentbus.envelope import EXTENSIONS


class Order(Message, type="unit.env.Order"):
    item: str
    quantity: int = 1


class Other(Message, type="unit.env.Other"):
    note: str


def full_envelope() -> Envelope:
    return Envelope(
        type="unit.env.Order",
        source="shop/checkout",
        data={"item": "tea ☕", "quantity": 2},
        id="01J00000000000000000000000",
        time="2024-05-01T12:00:00.000000Z",
        topic="orders",
        runid="run-1",
        causationid="cause-1",
        correlationid="corr-1",
        replyto="_inbox.x",
        partitionkey="customer-7",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=value",
        subject="order/42",
        dataschema="https://example.com/order.json",
        extensions={"signature": "abc==", "xnested": {"a": [1, 2]}},
    )


def test_round_trip_keeps_every_attribute_and_extension() -> None:
    env = full_envelope()

    raw = env.encode()
    back = Envelope.decode(raw)

    assert back == env
    obj = json.loads(raw)
    assert obj["specversion"] == "1.0"
    assert obj["datacontenttype"] == "application/json"
    for name in EXTENSIONS:
        assert obj[name] == getattr(env, name)
    assert obj["signature"] == "abc=="
    assert obj["xnested"] == {"a": [1, 2]}
    assert "extensions" not in obj
    assert "☕" in raw.decode()  # UTF-8, not \\u escapes
    assert b" " not in raw.replace(b"tea \xe2\x98\x95", b"")  # compact separators


def test_unknown_extension_attributes_survive_decoding() -> None:
    raw = json.dumps(
        {
            "specversion": "1.0",
            "id": "e1",
            "source": "elsewhere",
            "type": "unit.env.Order",
            "comexampleext": "yes",
            "sequence": 7,
            "data": {"item": "x"},
        }
    ).encode()

    env = Envelope.decode(raw)

    assert env.extensions == {"comexampleext": "yes", "sequence": 7}
    assert json.loads(env.encode())["sequence"] == 7


def test_absent_attributes_are_omitted() -> None:
    env = Envelope(type="t", source="s", id="e1", time=None, datacontenttype=None)

    assert env.to_dict() == {"specversion": "1.0", "id": "e1", "source": "s", "type": "t"}
    back = Envelope.decode(env.encode())
    assert (back.time, back.data, back.runid, back.extensions) == (None, None, None, {})


def test_defaults_give_id_and_time() -> None:
    env = Envelope(type="t", source="s")

    assert len(env.id) == 26
    assert env.time is not None
    assert env.time.endswith("Z")


def test_for_message_wraps_a_message() -> None:
    env = Envelope.for_message(Order(item="pen"), source="shop", runid="r1", partitionkey="k")

    assert env.type == "unit.env.Order"
    assert env.data == {"item": "pen", "quantity": 1}
    assert (env.source, env.runid, env.partitionkey) == ("shop", "r1", "k")
    assert decode_data(Envelope.decode(env.encode())) == Order(item="pen")


def test_for_message_refuses_non_messages() -> None:
    with pytest.raises(UsageError, match="'dict'"):
        Envelope.for_message({"item": "pen"}, source="shop")  # type: ignore[arg-type]


def test_message_too_large() -> None:
    env = Envelope.for_message(Order(item="x" * 500), source="shop")

    with pytest.raises(MessageTooLarge) as info:
        env.encode(max_bytes=100)

    assert info.value.limit == 100
    assert info.value.size == len(env.encode())
    assert "unit.env.Order" in str(info.value)
    assert "100" in str(info.value)
    assert DEFAULT_MAX_EVENT_BYTES == 1024 * 1024


def _event(**overrides: object) -> bytes:
    body: dict[str, object] = {"specversion": "1.0", "id": "e1", "source": "s", "type": "t"}
    body.update(overrides)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        (b"\xff\xfe{}", "invalid UTF-8", ""),
        (b'{"specversion": "1.0",', "invalid JSON", ""),
        (b"", "invalid JSON", ""),
        (b"[1, 2]", "not a CloudEvent", "list"),
        (b'"text"', "not a CloudEvent", "str"),
        (_event(source=None), "missing CloudEvents attribute", "source"),
        (_event(id=None, type=None), "missing CloudEvents attribute", "id, type"),
        (_event(source=""), "missing CloudEvents attribute", "source"),
        (_event(specversion="0.3"), "unsupported specversion", "'0.3'"),
        (_event(runid=5), "invalid CloudEvents attribute", "runid"),
        (_event(type=["t"]), "invalid CloudEvents attribute", "type"),
        (_event(time=1700000000), "invalid CloudEvents attribute", "time"),
        # an attribute of the same JSON type as data (the fast path counts them)
        (_event(data=3, runid=5), "invalid CloudEvents attribute", "runid"),
        (_event(data={"a": 1}, topic={"b": 2}), "invalid CloudEvents attribute", "topic"),
        (_event(data=[1], subject=[2]), "invalid CloudEvents attribute", "subject"),
        (_event(data="x", replyto=True), "invalid CloudEvents attribute", "replyto"),
        (_event(id=7, data=7), "invalid CloudEvents attribute", "id"),
    ],
)
def test_decode_errors_name_the_reason(raw: bytes, reason: str, detail: str) -> None:
    with pytest.raises(DecodeError) as info:
        Envelope.decode(raw)

    assert info.value.reason == reason
    assert detail in info.value.detail
    assert str(info.value).startswith(reason)


def test_decode_accepts_text() -> None:
    assert Envelope.decode(_event().decode()).id == "e1"


def test_decode_data_errors() -> None:
    unknown = Envelope(type="unit.env.NoSuchType", source="s", data={})
    with pytest.raises(DecodeError) as info:
        decode_data(unknown)
    assert info.value.reason == "unknown message type"
    assert "unit.env.NoSuchType" in info.value.detail

    bad = Envelope(type="unit.env.Order", source="s", data={"item": "x", "quantity": "many"})
    with pytest.raises(DecodeError) as info:
        decode_data(bad)
    assert info.value.reason == "invalid payload"
    assert "quantity" in info.value.detail

    extra = Envelope(type="unit.env.Order", source="s", data={"item": "x", "colour": "red"})
    with pytest.raises(DecodeError, match="colour"):
        decode_data(extra)


def test_decode_data_with_expected_class() -> None:
    env = Envelope(type="unit.env.Order", source="s", data={"note": "hi"})

    assert decode_data(env, Other) == Other(note="hi")
    with pytest.raises(DecodeError, match="invalid payload"):
        decode_data(env)


def test_new_id_is_a_sortable_ulid() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 26 and set(i) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for i in ids)

    earlier = new_id()
    time.sleep(0.002)
    assert new_id() > earlier


def test_ids_made_in_one_process_are_strictly_increasing() -> None:
    # Monotonic ULIDs: within a millisecond the random part counts up, carries included.
    ids = [new_id() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    stamp = int(time.time() * 1000)
    value = 0
    for ch in ids[-1]:
        value = value * 32 + crockford.index(ch)
    assert abs((value >> 80) - stamp) < 5_000  # the first 48 bits are the millisecond
