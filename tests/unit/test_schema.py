"""Message versions and upcasters (agentbus.schema), and where payloads are upcast."""

from __future__ import annotations

from typing import Any

import pytest

from agentbus import DecodeError, Envelope, Message, UsageError, decode_data, upcaster
from agentbus.compare import normalize
from agentbus.schema import upcast, version_of


class Parcel(Message, type="schema.Parcel", version=3):
    grams: int
    label: str = ""


@upcaster("schema.Parcel", from_version=1)
def _kilos(data: dict[str, Any]) -> dict[str, Any]:
    return {"weight_g": int(data.pop("kilos") * 1000)}


@upcaster("schema.Parcel", from_version=2)
def _rename(data: dict[str, Any]) -> dict[str, Any]:
    return {"grams": data["weight_g"]}


def old(data: dict[str, Any], version: int | None = None) -> Envelope:
    env = Envelope(type="schema.Parcel", source="old-sender", data=data)
    if version is not None:
        env.extensions["dataversion"] = version
    return Envelope.decode(env.encode())  # as read off the wire


def test_events_carry_their_version_and_version_1_carries_nothing() -> None:
    class Plain(Message, type="schema.Plain"):
        x: int

    assert Envelope.for_message(Parcel(grams=1), source="s").to_dict()["dataversion"] == 3
    assert "dataversion" not in Envelope.for_message(Plain(x=1), source="s").to_dict()
    assert (Parcel.message_type, Parcel.message_version) == ("schema.Parcel", 3)


def test_older_payloads_are_upcast_one_version_at_a_time() -> None:
    assert decode_data(old({"kilos": 1.5})) == Parcel(grams=1500)
    assert decode_data(old({"weight_g": 7}, version=2)) == Parcel(grams=7)
    assert decode_data(old({"grams": 9, "label": "x"}, version=3)) == Parcel(grams=9, label="x")


def test_a_missing_upcaster_names_the_type_and_both_versions() -> None:
    class Lonely(Message, type="schema.Lonely", version=2):
        x: int

    with pytest.raises(DecodeError) as raised:
        decode_data(Envelope.decode(Envelope(type="schema.Lonely", source="s", data={}).encode()))
    assert raised.value.reason == "no upcaster"
    assert "schema.Lonely: the event is version 1, this code's is version 2" in str(raised.value)


def test_a_newer_or_invalid_version_is_refused() -> None:
    with pytest.raises(DecodeError, match="newer data version"):
        decode_data(old({"grams": 1}, version=4))
    for bad in (0, "two", True):
        with pytest.raises(DecodeError, match="invalid data version"):
            version_of({"dataversion": bad})


def test_an_upcaster_that_raises_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="upcaster failed"):
        upcast("schema.Parcel", {"no kilos": 1}, 1, 3)


def test_registration_mistakes_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        upcaster("schema.Parcel", from_version=0)
    with pytest.raises(UsageError, match="already registered"):

        @upcaster("schema.Parcel", from_version=1)
        def _other(data: dict[str, Any]) -> dict[str, Any]:
            return data

    with pytest.raises(UsageError):

        class Bad(Message, type="schema.Bad", version=0):
            x: int


def test_replay_comparison_sees_recorded_events_in_today_s_shape() -> None:
    recorded = old({"kilos": 2.0}).to_dict()
    today = Envelope.for_message(Parcel(grams=2000), source="old-sender").to_dict()
    assert normalize(recorded)["data"] == normalize(today)["data"]
