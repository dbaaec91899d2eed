"""OpenAIChatModel through the real openai SDK and httpx, against a scripted server."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from openai_server import OpenAIServer
from pydantic import BaseModel, Field

from agentbus.agents import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    ChatResponse,
    ModelAuthError,
    ModelError,
    ModelRateLimited,
    ModelRequestError,
    ModelResponseError,
    ModelTimeout,
    ModelUnavailable,
    OfflineModel,
    OpenAIChatModel,
    ToolCall,
    ToolSpec,
    model_from_env,
)
from agentbus.errors import AgentBusError, UsageError

KEY = "sk-test-SECRET-0123456789"

ENV_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_MODEL",
    "AGENTBUS_MODEL",
    "AGENTBUS_MODEL_URL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own OPENAI_* settings must not leak into these tests.
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_model(openai_server: OpenAIServer) -> Callable[..., OpenAIChatModel]:
    """Model clients on the scripted server with tiny backoffs; closed by the test."""

    def make(**overrides: Any) -> OpenAIChatModel:
        options: dict[str, Any] = {
            "base_url": openai_server.url,
            "api_key": KEY,
            "timeout": 5.0,
            "max_attempts": 3,
            "backoff_initial": 0.001,
            "backoff_max": 0.05,
        }
        options.update(overrides)
        return OpenAIChatModel("test-model", **options)

    return make


@pytest.fixture
async def model(make_model: Callable[..., OpenAIChatModel]) -> AsyncIterator[OpenAIChatModel]:
    async with make_model() as m:
        yield m


def ask(text: str = "Say hello", **fields: Any) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage.system("Be brief."), ChatMessage.user(text)], **fields)


class Weather(BaseModel):
    city: str
    celsius: float
    note: str | None = None


WEATHER_TOOL = ToolSpec(
    name="get_weather",
    description="Current weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)


async def test_plain_reply_carries_usage_latency_and_attempts(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    openai_server.reply("Hello there", prompt_tokens=12, completion_tokens=3, model="served-model")

    response = await model.complete(ask(max_tokens=50, temperature=0.2))

    assert response.text == "Hello there"
    assert response.message.role == "assistant"
    assert response.usage.input_tokens == 12
    assert response.usage.output_tokens == 3
    assert response.usage.total == 15
    assert response.model == "served-model"
    assert response.provider == "openai-compatible"
    assert response.finish_reason == "stop"
    assert response.attempts == 1
    assert response.latency_ms > 0
    assert response.offline is False
    [sent] = openai_server.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["model"] == "test-model"
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent.body["max_tokens"] == 50
    assert sent.body["temperature"] == 0.2
    assert "tools" not in sent.body
    assert "response_format" not in sent.body
    # The journal stores responses as JSON and substitutes them on replay.
    assert ChatResponse.model_validate(response.model_dump(mode="json")) == response


async def test_request_model_overrides_the_default(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    openai_server.reply("ok")
    await model.complete(ask(model="other-model"))
    assert openai_server.requests[0].body["model"] == "other-model"


async def test_tool_call_is_parsed_and_tools_are_sent(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    openai_server.reply_tool_call("get_weather", {"city": "Paris"}, call_id="call_42")

    response = await model.complete(ask("Weather in Paris?", tools=[WEATHER_TOOL]))

    assert response.tool_calls == [
        ToolCall(id="call_42", name="get_weather", arguments={"city": "Paris"})
    ]
    assert response.message.content is None
    assert response.finish_reason == "tool_calls"
    assert openai_server.requests[0].body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "parameters": WEATHER_TOOL.parameters,
            },
        }
    ]


async def test_tool_results_are_sent_back_in_protocol_shape(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    openai_server.reply("It is sunny in Paris.")
    call = ToolCall(id="call_42", name="get_weather", arguments={"city": "Paris"})
    request = ChatRequest(
        messages=[
            ChatMessage.user("Weather in Paris?"),
            ChatMessage.assistant(tool_calls=[call]),
            ChatMessage.tool('{"sky": "sunny"}', tool_call_id="call_42", name="get_weather"),
        ],
        tools=[WEATHER_TOOL],
    )

    response = await model.complete(request)

    assert response.text == "It is sunny in Paris."
    messages = openai_server.requests[0].body["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_42",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    assert messages[2] == {"role": "tool", "content": '{"sky": "sunny"}', "tool_call_id": "call_42"}


async def test_malformed_tool_arguments_are_a_response_error(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    openai_server.reply_tool_call("get_weather", '{"city": "Par')

    with pytest.raises(ModelResponseError, match=r"arguments of tool call 'get_weather'"):
        await model.complete(ask(tools=[WEATHER_TOOL]))
    assert len(openai_server.requests) == 1


async def test_tool_arguments_must_be_an_object(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    openai_server.reply_tool_call("get_weather", '["Paris"]')
    with pytest.raises(ModelResponseError, match="must be a JSON object"):
        await model.complete(ask(tools=[WEATHER_TOOL]))


async def test_structured_output_sends_a_strict_schema_and_parses(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    openai_server.reply_json({"city": "Oslo", "celsius": -3.5, "note": None})
    schema = Weather.model_json_schema()

    response = await model.complete(
        ask(response_schema=schema, response_schema_name="weather_report")
    )

    assert response.parse_as(Weather) == Weather(city="Oslo", celsius=-3.5)
    response_format = openai_server.requests[0].body["response_format"]
    assert response_format["type"] == "json_schema"
    sent = response_format["json_schema"]
    assert sent["name"] == "weather_report"
    assert sent["strict"] is True
    # Strict mode needs closed objects with every property required; the caller's schema is
    # left untouched.
    assert sent["schema"]["additionalProperties"] is False
    assert sent["schema"]["required"] == ["city", "celsius", "note"]
    assert "default" not in sent["schema"]["properties"]["note"]
    assert schema["required"] == ["city", "celsius"]


class Wind(BaseModel):
    speed: float
    direction: str = "N"


class Forecast(BaseModel):
    wind: Wind = Field(description="Wind at noon.")
    later: list[Wind] = []


async def test_strict_schema_closes_nested_objects_and_inlines_described_refs(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    openai_server.reply_json({"wind": {"speed": 3.0, "direction": "W"}, "later": []})

    response = await model.complete(ask(response_schema=Forecast.model_json_schema()))

    assert response.parse_as(Forecast).wind == Wind(speed=3.0, direction="W")
    schema = openai_server.requests[0].body["response_format"]["json_schema"]["schema"]
    assert schema["$defs"]["Wind"]["additionalProperties"] is False
    assert schema["$defs"]["Wind"]["required"] == ["speed", "direction"]
    wind = schema["properties"]["wind"]
    assert "$ref" not in wind  # strict mode rejects $ref beside other keywords
    assert wind["description"] == "Wind at noon."
    assert wind["additionalProperties"] is False
    assert schema["properties"]["later"]["items"] == {"$ref": "#/$defs/Wind"}


async def test_structured_output_that_is_not_json_is_a_response_error(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    openai_server.reply("Sure! The weather is nice.")
    with pytest.raises(ModelResponseError, match="structured output is not valid JSON"):
        await model.complete(ask(response_schema=Weather.model_json_schema()))


async def test_refusal_is_a_response_error(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    openai_server.reply(None, refusal="I cannot help with that.")
    with pytest.raises(ModelResponseError, match="refused"):
        await model.complete(ask())


async def test_429_waits_for_retry_after_then_succeeds(
    openai_server: OpenAIServer, make_model: Callable[..., OpenAIChatModel]
) -> None:
    openai_server.fail(429, "slow down", headers={"Retry-After": "0.3"})
    openai_server.reply("made it")

    async with make_model(backoff_max=5.0) as m:
        response = await m.complete(ask())

    assert response.text == "made it"
    assert response.attempts == 2
    first, second = openai_server.requests
    # Our own backoff would be ~1 ms: only Retry-After explains the gap.
    assert 0.25 <= second.received_at - first.received_at < 2.0
    assert response.latency_ms >= 250


async def test_retry_after_as_http_date_is_capped_at_backoff_max(
    openai_server: OpenAIServer, make_model: Callable[..., OpenAIChatModel]
) -> None:
    in_an_hour = email.utils.formatdate(time.time() + 3600, usegmt=True)
    openai_server.fail(503, "maintenance", headers={"Retry-After": in_an_hour})
    openai_server.reply("back")

    async with make_model(backoff_max=0.2) as m:
        response = await m.complete(ask())

    assert response.attempts == 2
    first, second = openai_server.requests
    assert 0.15 <= second.received_at - first.received_at < 2.0


async def test_unreadable_retry_after_falls_back_to_backoff(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    openai_server.fail(429, headers={"Retry-After": "soon-ish"})
    openai_server.reply("ok")
    response = await model.complete(ask())
    assert response.attempts == 2


async def test_5xx_until_exhausted_is_model_unavailable(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    for _ in range(3):
        openai_server.fail(500, "upstream exploded")

    with pytest.raises(ModelUnavailable) as caught:
        await model.complete(ask())

    error = caught.value
    assert not isinstance(error, ModelRateLimited)
    assert error.attempts == 3
    assert error.status_code == 500
    assert "3 attempt(s)" in str(error)
    assert "HTTP 500" in str(error)
    assert "upstream exploded" in str(error)
    assert isinstance(error.__cause__, Exception)  # chained from the SDK's exception
    assert len(openai_server.requests) == 3


async def test_5xx_then_success_counts_attempts(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    openai_server.fail(502)
    openai_server.fail(500)
    openai_server.reply("third time lucky")
    response = await model.complete(ask())
    assert response.attempts == 3
    assert response.text == "third time lucky"


async def test_429_until_exhausted_is_model_rate_limited(
    openai_server: OpenAIServer, make_model: Callable[..., OpenAIChatModel]
) -> None:
    for _ in range(2):
        openai_server.fail(429, "quota", headers={"Retry-After": "0.01"})

    async with make_model(max_attempts=2) as m:
        with pytest.raises(ModelRateLimited) as caught:
            await m.complete(ask())

    assert caught.value.attempts == 2
    assert caught.value.status_code == 429
    assert caught.value.retry_after == pytest.approx(0.01)
    assert isinstance(caught.value, ModelUnavailable)


async def test_slow_reply_is_model_timeout_after_every_attempt(
    openai_server: OpenAIServer, make_model: Callable[..., OpenAIChatModel]
) -> None:
    openai_server.slow(3.0)
    openai_server.slow(3.0)

    started = time.monotonic()
    async with make_model(timeout=0.3, max_attempts=2) as m:
        with pytest.raises(ModelTimeout) as caught:
            await m.complete(ask())

    assert isinstance(caught.value, TimeoutError)
    assert caught.value.attempts == 2
    assert caught.value.timeout == 0.3
    assert "0.3s" in str(caught.value)
    assert len(openai_server.requests) == 2
    assert time.monotonic() - started < 2.5  # neither attempt waited for the slow reply


async def test_cancellation_abandons_the_request_at_once(
    openai_server: OpenAIServer, model: OpenAIChatModel
) -> None:
    openai_server.slow(3.0)
    task = asyncio.create_task(model.complete(ask()))
    await openai_server.wait_for_requests(1)

    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0
    assert len(openai_server.requests) == 1  # cancellation is not retried


async def test_timeout_then_success(
    openai_server: OpenAIServer, make_model: Callable[..., OpenAIChatModel]
) -> None:
    openai_server.slow(3.0)
    openai_server.reply("quick this time")
    async with make_model(timeout=0.3, max_attempts=2) as m:
        response = await m.complete(ask())
    assert response.attempts == 2


@pytest.mark.parametrize(
    ("body", "content_type", "match"),
    [
        (b'{"id": "x", "choices": [', "application/json", "not valid JSON"),
        (b"<html>Bad gateway</html>", "text/html", "expected a chat completion"),
        (
            b'{"id": "x", "object": "chat.completion", "choices": []}',
            "application/json",
            "no choices",
        ),
        (b'{"id": "x", "choices": [{"index": 0}]}', "application/json", "expected shape"),
    ],
    ids=["truncated-json", "html", "no-choices", "choice-without-message"],
)
async def test_malformed_body_is_a_response_error_not_retried(
    openai_server: OpenAIServer,
    model: OpenAIChatModel,
    body: bytes,
    content_type: str,
    match: str,
) -> None:
    openai_server.raw(body, content_type=content_type)
    with pytest.raises(ModelResponseError, match=match):
        await model.complete(ask())
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_is_not_retried_and_never_shows_the_key(
    openai_server: OpenAIServer, model: OpenAIChatModel, status: int
) -> None:
    # A careless server echoing the key must not get it into our messages.
    openai_server.fail(status, f"Incorrect API key provided: {KEY}")

    with pytest.raises(ModelAuthError) as caught:
        await model.complete(ask())

    assert caught.value.status_code == status
    assert len(openai_server.requests) == 1
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value)
    assert "OPENAI_API_KEY" in str(caught.value)
    assert openai_server.url in str(caught.value)


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_other_4xx_is_a_request_error_not_retried(
    openai_server: OpenAIServer, model: OpenAIChatModel, status: int
) -> None:
    openai_server.fail(status, f"model does not exist (your key {KEY})")

    with pytest.raises(ModelRequestError) as caught:
        await model.complete(ask())

    assert caught.value.status_code == status
    assert "model does not exist" in str(caught.value)
    assert KEY not in str(caught.value)
    assert len(openai_server.requests) == 1


async def test_unreachable_server_is_model_unavailable(unused_port: int) -> None:
    async with OpenAIChatModel(
        "m",
        base_url=f"http://127.0.0.1:{unused_port}/v1",
        api_key=KEY,
        max_attempts=2,
        backoff_initial=0.001,
        backoff_max=0.01,
    ) as m:
        with pytest.raises(ModelUnavailable) as caught:
            await m.complete(ask())

    assert caught.value.attempts == 2
    assert caught.value.status_code is None
    assert "cannot reach" in str(caught.value)
    assert isinstance(caught.value, ConnectionError)


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: connecting to it is refused


async def test_errors_share_the_project_root() -> None:
    assert issubclass(ModelError, AgentBusError)
    assert issubclass(ModelTimeout, ModelError)
    assert issubclass(ModelRateLimited, ModelUnavailable)


async def test_repr_hides_the_key_and_url_credentials() -> None:
    async with OpenAIChatModel(
        "m", base_url="https://user:pa55word@llm.internal:8443/v1", api_key=KEY
    ) as m:
        text = repr(m)
    assert KEY not in text
    assert "pa55word" not in text
    assert text == (
        "OpenAIChatModel(model='m', base_url='https://llm.internal:8443/v1', "
        "provider='openai-compatible')"
    )


async def test_it_is_a_chat_model(model: OpenAIChatModel) -> None:
    assert isinstance(model, ChatModel)
    assert isinstance(OfflineModel(), ChatModel)


async def test_closed_model_refuses_requests(make_model: Callable[..., OpenAIChatModel]) -> None:
    m = make_model()
    await m.aclose()
    await m.aclose()  # twice is harmless
    with pytest.raises(UsageError, match="closed"):
        await m.complete(ask())


async def test_a_given_http_client_is_used_and_left_open(
    openai_server: OpenAIServer, make_model: Callable[..., OpenAIChatModel]
) -> None:
    seen: list[str] = []

    async def record(request: httpx.Request) -> None:
        seen.append(str(request.url))

    async with httpx.AsyncClient(event_hooks={"request": [record]}) as http:
        openai_server.reply("via your client")
        async with make_model(http_client=http) as m:
            response = await m.complete(ask())
        assert not http.is_closed
    assert response.text == "via your client"
    assert seen == [f"{openai_server.url}/chat/completions"]


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"max_attempts": 0},
        {"backoff_initial": -1},
        {"backoff_initial": 2.0, "backoff_max": 1.0},
    ],
)
def test_invalid_configuration_is_a_usage_error(options: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", api_key=KEY, **options)


def test_the_openai_api_needs_a_key() -> None:
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        OpenAIChatModel("gpt-4o-mini")


async def test_configuration_from_the_environment(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    openai_server.reply("configured")

    async with OpenAIChatModel(max_attempts=1) as m:
        assert m.name == "env-model"
        assert m.base_url == openai_server.url
        await m.complete(ask())

    [sent] = openai_server.requests
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["model"] == "env-model"


async def test_local_server_needs_no_key(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTBUS_MODEL_URL", openai_server.url)
    monkeypatch.setenv("AGENTBUS_MODEL", "llama-local")
    openai_server.reply("local")

    model = model_from_env()
    assert isinstance(model, OpenAIChatModel)
    async with model:
        response = await model.complete(ask())

    assert response.text == "local"
    assert openai_server.requests[0].body["model"] == "llama-local"
    assert openai_server.requests[0].headers["authorization"] == "Bearer sk-no-key-required"


async def test_model_from_env_prefers_the_agentbus_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("AGENTBUS_MODEL_URL", "http://127.0.0.1:2/v1")
    monkeypatch.setenv("OPENAI_MODEL", "from-openai-model")
    async with model_from_env() as model:
        assert isinstance(model, OpenAIChatModel)
        assert model.base_url == "http://127.0.0.1:2/v1"
        assert model.name == "from-openai-model"


async def test_model_from_env_defaults_to_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    async with model_from_env() as model:
        assert isinstance(model, OfflineModel)

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("AGENTBUS_MODEL", "offline")
    async with model_from_env() as model:
        assert isinstance(model, OfflineModel)

    monkeypatch.setenv("AGENTBUS_MODEL", "gpt-4o")
    async with model_from_env() as model:
        assert isinstance(model, OpenAIChatModel)
        assert model.provider == "openai"
        assert model.name == "gpt-4o"


def test_request_json_round_trip() -> None:
    request = ask(
        tools=[WEATHER_TOOL],
        response_schema=Weather.model_json_schema(),
        temperature=0.0,
        max_tokens=10,
    )
    encoded = json.loads(json.dumps(request.model_dump(mode="json")))
    assert ChatRequest.model_validate(encoded) == request
