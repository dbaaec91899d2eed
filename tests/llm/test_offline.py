"""OfflineModel: deterministic, labelled, good enough to drive tool and schema workflows."""

from __future__ import annotations

import datetime
import enum
import json
import uuid
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from agentbus.agents import (
    OFFLINE_LABEL,
    ChatMessage,
    ChatModel,
    ChatRequest,
    ChatResponse,
    OfflineModel,
    ToolCall,
    tool,
)
from agentbus.errors import UsageError


@tool
def get_weather(city: str, days: int = 1) -> str:
    """Get the weather forecast for a city."""
    return f"sunny in {city} for {days} day(s)"


@tool
def search_documents(query: str, limit: int = 5, exact: bool = False) -> list[str]:
    """Search the document archive for matching text."""
    return [query][:limit]


@tool
def convert_currency(amount: float, currency: Literal["EUR", "USD", "GBP"] = "EUR") -> float:
    """Convert money between currencies."""
    return amount


TOOLS = [get_weather.spec, search_documents.spec, convert_currency.spec]


def user(text: str, **fields: Any) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage.user(text)], **fields)


async def test_plain_answers_are_labelled() -> None:
    response = await OfflineModel().complete(user("What is a consumer group?"))

    assert response.text.startswith(OFFLINE_LABEL)
    assert OFFLINE_LABEL == "[offline model] "
    assert "What is a consumer group?" in response.text
    assert response.offline is True
    assert response.provider == "offline"
    assert response.model == "agentbus-offline"
    assert response.finish_reason == "stop"
    assert response.attempts == 1


async def test_same_request_same_response() -> None:
    request = ChatRequest(
        messages=[ChatMessage.system("You are terse."), ChatMessage.user("Forecast for Oslo?")],
        tools=TOOLS,
    )
    first = await OfflineModel().complete(request)
    second = await OfflineModel().complete(request)

    def stable(response: ChatResponse) -> dict[str, object]:
        return response.model_dump(mode="json", exclude={"latency_ms"})

    assert stable(first) == stable(second)
    assert first.tool_calls  # the comparison covered a tool call, ids included
    assert ChatResponse.model_validate(first.model_dump(mode="json")) == first


async def test_usage_counts_words() -> None:
    request = ChatRequest(
        messages=[ChatMessage.system("one two three"), ChatMessage.user("four five")]
    )
    response = await OfflineModel().complete(request)
    assert response.usage.input_tokens == 5
    assert response.usage.output_tokens == len(response.text.split())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What's the weather forecast in Paris?", "get_weather"),
        ("Search the archive for documents about Redis", "search_documents"),
        ("Convert 10 dollars into currency I can use", "convert_currency"),
    ],
)
async def test_calls_the_tool_that_matches_the_request(text: str, expected: str) -> None:
    response = await OfflineModel().complete(user(text, tools=TOOLS))

    [call] = response.tool_calls
    assert call.name == expected
    assert call.id.startswith("call_")
    assert response.finish_reason == "tool_calls"
    assert response.message.content is None


async def test_generated_arguments_validate_against_the_tool() -> None:
    response = await OfflineModel().complete(
        user("Please search documents for 'stream trimming', limit: 3", tools=TOOLS)
    )

    [call] = response.tool_calls
    assert call.arguments == {"query": "stream trimming", "limit": 3, "exact": False}
    assert await search_documents.invoke(call.arguments) == ["stream trimming"]


async def test_string_arguments_default_to_the_user_text() -> None:
    response = await OfflineModel().complete(user("weather for Lisbon tomorrow", tools=TOOLS))
    [call] = response.tool_calls
    assert call.arguments == {"city": "weather for Lisbon tomorrow", "days": 1}


async def test_enum_and_number_arguments() -> None:
    response = await OfflineModel().complete(user("convert currency: USD amount=12.5", tools=TOOLS))
    [call] = response.tool_calls
    assert call.arguments == {"amount": 12.5, "currency": "USD"}


async def test_a_single_tool_is_used_even_without_matching_words() -> None:
    response = await OfflineModel().complete(user("Hello there", tools=[get_weather.spec]))
    assert [call.name for call in response.tool_calls] == ["get_weather"]


async def test_no_matching_tool_among_several_means_a_plain_answer() -> None:
    response = await OfflineModel().complete(user("Hello there", tools=TOOLS))
    assert response.tool_calls == []
    assert response.text.startswith(OFFLINE_LABEL)


async def test_tool_results_are_summarised() -> None:
    model = OfflineModel()
    request = user("Weather in Rome?", tools=TOOLS)
    first = await model.complete(request)
    [call] = first.tool_calls
    result = await get_weather.invoke(call.arguments)

    second = await model.complete(
        ChatRequest(
            messages=[
                *request.messages,
                first.message,
                ChatMessage.tool(result, tool_call_id=call.id),
            ],
            tools=TOOLS,
        )
    )

    assert second.tool_calls == []
    assert second.text == f"{OFFLINE_LABEL}Based on get_weather: {result}"


async def test_long_tool_results_are_truncated() -> None:
    call = ToolCall(id="c1", name="search_documents", arguments={"query": "x"})
    request = ChatRequest(
        messages=[
            ChatMessage.user("search"),
            ChatMessage.assistant(tool_calls=[call]),
            ChatMessage.tool("word " * 500, tool_call_id="c1", name="search_documents"),
        ]
    )
    response = await OfflineModel().complete(request)
    assert response.text.startswith(f"{OFFLINE_LABEL}Based on search_documents: word word")
    assert response.text.endswith("...")
    assert len(response.text) < 300


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Step(BaseModel):
    title: str
    minutes: int = Field(ge=5, le=60)


class Plan(BaseModel):
    goal: str
    steps: list[Step] = Field(min_length=2)
    priority: Priority
    kind: Literal["research", "build"]
    confidence: float = Field(gt=0.5)
    tags: set[str] = set()
    owner: str | None = None
    due: datetime.date
    ticket: uuid.UUID
    short: str = Field(max_length=10)
    coordinates: tuple[int, str]
    extras: dict[str, int] = {}
    approved: bool


async def test_structured_output_validates_against_the_schema() -> None:
    request = user("Plan a study of Redis Streams", response_schema=Plan.model_json_schema())

    response = await OfflineModel().complete(request)

    plan = response.parse_as(Plan)
    assert plan.goal.startswith(OFFLINE_LABEL)
    assert "Plan a study of Redis Streams" in plan.goal
    assert len(plan.steps) == 2
    assert all(5 <= step.minutes <= 60 for step in plan.steps)
    assert plan.priority is Priority.LOW
    assert plan.kind == "research"
    assert plan.confidence > 0.5
    assert len(plan.short) <= 10
    assert json.loads(response.text)["approved"] is False


class Node(BaseModel):
    name: str
    children: list[Node] = []


async def test_recursive_schemas_terminate() -> None:
    response = await OfflineModel().complete(user("tree", response_schema=Node.model_json_schema()))
    assert response.parse_as(Node).name.startswith(OFFLINE_LABEL)


async def test_structured_output_after_tool_results_quotes_them() -> None:
    class Answer(BaseModel):
        summary: str

    request = ChatRequest(
        messages=[
            ChatMessage.user("weather?"),
            ChatMessage.assistant(tool_calls=[ToolCall(id="c1", name="get_weather")]),
            ChatMessage.tool("rainy", tool_call_id="c1"),
        ],
        response_schema=Answer.model_json_schema(),
    )
    response = await OfflineModel().complete(request)
    assert response.parse_as(Answer).summary == f"{OFFLINE_LABEL}Based on get_weather: rainy"


async def test_script_is_served_first_then_rules() -> None:
    scripted = ChatResponse(
        message=ChatMessage.assistant("scripted"), model="m", provider="test", offline=True
    )
    model = OfflineModel(script=["first", scripted])

    assert (await model.complete(user("a"))).text == "first"
    assert await model.complete(user("b")) == scripted
    assert (await model.complete(user("c"))).text.startswith(OFFLINE_LABEL)


async def test_async_with_and_closed() -> None:
    async with OfflineModel() as model:
        assert isinstance(model, ChatModel)
    with pytest.raises(UsageError, match="closed"):
        await model.complete(user("late"))
