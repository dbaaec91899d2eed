"""Message classes and the type registry."""

from __future__ import annotations

import pydantic
import pytest

from agentbus import Message, UsageError, lookup_type, registered_types


class Question(Message, type="unit.msg.Question"):
    text: str


class Answer(Message, type="unit.msg.Answer", version=2):
    text: str


class Untyped(Message):
    value: int = 0


def test_type_names() -> None:
    assert Question.message_type == "unit.msg.Question"
    assert Question(text="q").message_type == "unit.msg.Question"
    assert (Answer.message_type, Answer.message_version) == ("unit.msg.Answer", 2)
    assert Question.message_version == 1
    assert Untyped.message_type == f"{__name__}.Untyped"
    assert Message.message_type == "agentbus.Message"


def test_registry_lookup() -> None:
    assert lookup_type("unit.msg.Question") is Question
    assert lookup_type("unit.msg.Answer") is Answer
    assert lookup_type("unit.msg.Answer.v2") is None
    assert lookup_type("unit.msg.Nothing") is None

    types = registered_types()
    assert types["unit.msg.Question"] is Question
    types["unit.msg.Question"] = Answer  # a copy: the registry is unchanged
    assert lookup_type("unit.msg.Question") is Question


def test_duplicate_type_name_raises() -> None:
    with pytest.raises(UsageError) as info:

        class Imposter(Message, type="unit.msg.Question"):
            text: str

    message = str(info.value)
    assert "'unit.msg.Question'" in message
    assert f"{__name__}.Question" in message
    assert "Imposter" in message
    assert lookup_type("unit.msg.Question") is Question


def test_a_version_is_the_shape_of_one_type_name_not_another_type() -> None:
    # One class per type name in a process: version 3 of Answer is a new release of the
    # class (docs/schema-evolution.md), not a second type living next to version 2.
    with pytest.raises(UsageError):

        class AnswerV3(Message, type="unit.msg.Answer", version=3):
            text: str
            sources: list[str] = []

    assert lookup_type("unit.msg.Answer") is Answer


def test_redefining_the_same_class_is_allowed() -> None:
    # Reloading a module (or re-running a notebook cell) defines the class again.
    def define() -> type[Message]:
        class Reloaded(Message, type="unit.msg.Reloaded"):
            n: int

        return Reloaded

    first, second = define(), define()

    assert first is not second
    assert lookup_type("unit.msg.Reloaded") is second


@pytest.mark.parametrize("name", ["has space", "tab\there", " "])
def test_type_names_without_spaces(name: str) -> None:
    with pytest.raises(UsageError, match="without spaces"):

        class Bad(Message, type=name):
            pass


def test_messages_forbid_unknown_fields() -> None:
    with pytest.raises(pydantic.ValidationError):
        Question(text="q", extra="no")  # type: ignore[call-arg]
