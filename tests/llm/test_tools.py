"""Tools: schemas generated from annotations, validated invocation, result text."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from agentbus.agents import (
    ModelError,
    Tool,
    ToolArgumentsError,
    ToolSpec,
    tool,
    tool_result_to_text,
)
from agentbus.errors import UsageError


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str
    number: int = 1


@tool
def everything(
    text: str,
    count: int,
    ratio: float,
    flag: bool,
    mode: Literal["fast", "slow"],
    colour: Colour,
    names: list[str],
    maybe: int | None = None,
    address: Address | None = None,
    limit: int = 10,
) -> str:
    """Exercise every supported parameter type.

    This second paragraph is not part of the description.

    Args:
        text: The text to process.
        count (int): How many times,
            continuing on the next line.
        ratio: A ratio.

    Returns:
        A string.
    """
    return "ok"


def test_schema_covers_the_supported_types() -> None:
    schema = everything.spec.parameters
    props = schema["properties"]

    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["text", "count", "ratio", "flag", "mode", "colour", "names"]
    assert props["text"] == {"type": "string", "description": "The text to process."}
    assert props["count"] == {
        "type": "integer",
        "description": "How many times, continuing on the next line.",
    }
    assert props["ratio"] == {"type": "number", "description": "A ratio."}
    assert props["flag"] == {"type": "boolean"}
    assert props["mode"] == {"type": "string", "enum": ["fast", "slow"]}
    assert props["colour"] == {"$ref": "#/$defs/Colour"}
    assert schema["$defs"]["Colour"] == {"type": "string", "enum": ["red", "green"]}
    assert props["names"] == {"type": "array", "items": {"type": "string"}}
    assert props["maybe"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert props["address"]["anyOf"][0] == {"$ref": "#/$defs/Address"}
    assert schema["$defs"]["Address"]["required"] == ["street"]
    assert props["limit"] == {"type": "integer", "default": 10}


def test_no_titles_leak_but_a_field_called_title_survives() -> None:
    @tool
    def post(title: str, body: str = "") -> None:
        """Post a note."""

    schema = post.spec.parameters
    assert "title" not in schema
    assert "title" in schema["properties"]
    assert "title" not in schema["properties"]["title"]


def test_spec_name_and_description() -> None:
    spec = everything.spec
    assert isinstance(spec, ToolSpec)
    assert spec.name == "everything"
    assert spec.description == "Exercise every supported parameter type."
    assert ToolSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_decorator_with_overrides() -> None:
    @tool(name="lookup-user", description="Find a user by id.")
    def find(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    assert find.name == "lookup-user"
    assert find.spec.description == "Find a user by id."
    assert find(3) == {"id": 3}  # still callable as the function


async def test_invoke_validates_and_converts() -> None:
    seen: dict[str, Any] = {}

    @tool
    def record(colour: Colour, address: Address, when: datetime.date, n: int = 2) -> str:
        """Record things."""
        seen.update(colour=colour, address=address, when=when, n=n)
        return "done"

    result = await record.invoke(
        {"colour": "green", "address": {"street": "Main"}, "when": "2024-05-01"}
    )

    assert result == "done"
    assert seen == {
        "colour": Colour.GREEN,
        "address": Address(street="Main", number=1),
        "when": datetime.date(2024, 5, 1),
        "n": 2,
    }


async def test_async_functions_are_awaited() -> None:
    @tool
    async def double(x: int) -> int:
        """Double it."""
        return 2 * x

    assert await double.invoke({"x": "21"}) == 42


async def test_bad_arguments_list_every_field() -> None:
    with pytest.raises(ToolArgumentsError) as caught:
        await everything.invoke(
            {"text": "t", "count": "many", "ratio": 1.0, "flag": True, "mode": "medium",
             "colour": "red", "names": [], "surprise": 1}
        )  # fmt: skip

    error = caught.value
    assert isinstance(error, ModelError)
    assert error.tool == "everything"
    assert len(error.problems) == 3
    message = str(error)
    assert message.startswith("invalid arguments for tool 'everything': ")
    assert "'count': Input should be a valid integer" in message
    assert "(got 'many')" in message
    assert "'mode': Input should be 'fast' or 'slow'" in message
    assert "'surprise' is not a parameter of this tool" in message


async def test_missing_and_nested_errors() -> None:
    @tool
    def ship(address: Address) -> None:
        """Ship it."""

    with pytest.raises(ToolArgumentsError, match=r"'address\.number': Input should be a valid"):
        await ship.invoke({"address": {"street": "x", "number": "n/a"}})
    with pytest.raises(ToolArgumentsError, match="'address' is required"):
        await ship.invoke({})


async def test_errors_raised_by_the_tool_propagate() -> None:
    @tool
    def broken() -> None:
        """Always fails."""
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        await broken.invoke({})


async def test_parameters_named_like_basemodel_attributes() -> None:
    @tool
    def clash(json: str, schema: int, model_config: bool = False) -> tuple[str, int, bool]:
        """Names that would shadow BaseModel attributes."""
        return json, schema, model_config

    assert set(clash.spec.parameters["properties"]) == {"json", "schema", "model_config"}
    assert await clash.invoke({"json": "j", "schema": 1}) == ("j", 1, False)


async def test_positional_only_and_keyword_only_parameters() -> None:
    @tool
    def mixed(a: int, /, b: int, *, c: int = 3) -> int:
        """Mixed kinds."""
        return a * 100 + b * 10 + c

    assert await mixed.invoke({"a": 1, "b": 2}) == 123


async def test_bound_methods_can_be_tools() -> None:
    class Counter:
        def __init__(self) -> None:
            self.total = 0

        def add(self, amount: int) -> int:
            """Add to the counter."""
            self.total += amount
            return self.total

    counter = Counter()
    add = Tool(counter.add)
    assert list(add.spec.parameters["properties"]) == ["amount"]
    assert await add.invoke({"amount": 5}) == 5


def test_field_metadata_from_annotated_is_kept() -> None:
    @tool
    def pick(n: Annotated[int, Field(ge=1, le=5, description="How many.")]) -> None:
        """Pick n."""

    assert pick.spec.parameters["properties"]["n"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 5,
        "description": "How many.",
    }


def test_unannotated_parameter_is_a_usage_error() -> None:
    def f(x) -> None:  # type: ignore[no-untyped-def]
        """No annotation."""

    with pytest.raises(UsageError, match="parameter 'x' of tool 'f' has no type annotation"):
        Tool(f)


def test_var_args_are_a_usage_error() -> None:
    def f(*items: int) -> None:
        """Variadic."""

    with pytest.raises(UsageError, match=r"\*items"):
        Tool(f)


def test_bad_tool_name_is_a_usage_error() -> None:
    def f() -> None:
        """Fine."""

    with pytest.raises(UsageError, match="'has space'"):
        Tool(f, name="has space")


class Opaque:
    pass


def test_undescribable_type_is_a_usage_error() -> None:
    def f(thing: Opaque) -> None:
        """Takes something pydantic cannot describe."""

    with pytest.raises(UsageError, match="the parameters of tool 'f' cannot be"):
        Tool(f)


async def test_types_local_to_the_defining_function_resolve() -> None:
    class Local(BaseModel):
        v: int

    @tool
    def use(item: Local) -> int:
        """Use a locally defined model."""
        return item.v

    assert use.spec.parameters["$defs"]["Local"]["required"] == ["v"]
    assert await use.invoke({"item": {"v": 7}}) == 7


def test_unresolvable_annotation_is_a_usage_error() -> None:
    def f(x: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
        """Broken annotation."""

    with pytest.raises(UsageError, match="cannot read the signature of tool 'f'"):
        Tool(f)


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain text", "plain text"),
        (Address(street="Main"), '{"street":"Main","number":1}'),
        ({"a": [1, 2], "b": None}, '{"a": [1, 2], "b": null}'),
        ([Address(street="x")], '[{"street": "x", "number": 1}]'),
        (Point(1, 2), '{"x": 1, "y": 2}'),
        (datetime.date(2024, 1, 2), '"2024-01-02"'),
        (Colour.RED, '"red"'),
        ({"weird": object}, '{"weird": "<class \'object\'>"}'),
        (None, "null"),
        ("héllo", "héllo"),
        (["héllo"], '["héllo"]'),
    ],
)
def test_tool_result_to_text(value: object, text: str) -> None:
    assert tool_result_to_text(value) == text


def test_repr_names_the_function() -> None:
    assert repr(everything) == "Tool(name='everything', fn='everything')"
