"""An LLM agent answering over the bus, with a tool call, on both transports."""

from __future__ import annotations

import json

import pytest
from openai_server import OpenAIServer

from agentbus import Runtime
from agentbus.agents import OfflineModel, tool
from agentbus.agents.llm import LLMAgent, Memory, Prompt, Reply, StepLimitExceeded
from agentbus.agents.openai_model import OpenAIChatModel

SECRET = "sk-test-VERY-SECRET-0123456789"


@tool
def city_weather(city: str) -> str:
    """The current weather in a city.

    Args:
        city: the city's name.
    """
    known = {"paris": "light rain, 14 C", "oslo": "snow, -3 C"}
    return next((w for name, w in known.items() if name in city.lower()), "unknown")


async def _journal_dump(rt: Runtime, run_id: str) -> tuple[list[dict], str]:
    records = [r.record for r in await rt.journal.records(run_id)]
    return records, json.dumps(records)


async def test_llm_agent_calls_a_tool_through_the_real_openai_client(
    openai_server: OpenAIServer, url_for: str
) -> None:
    openai_server.reply_tool_call("city_weather", {"city": "Paris"}, call_id="call_7")
    openai_server.reply("It is raining in Paris (14 C).", prompt_tokens=40, completion_tokens=9)
    model = OpenAIChatModel(
        "test-model", base_url=openai_server.url, api_key=SECRET, max_attempts=1
    )
    agent = LLMAgent(
        name="weather",
        model=model,
        system_prompt="You report the weather.",
        tools=[city_weather],
        topic="ask.weather",
    )
    async with model, Runtime(url_for, block_ms=100) as rt:
        rt.add(agent)
        async with rt.run("weather") as run:
            reply = await run.request(
                "ask.weather", Prompt(text="Weather in Paris?"), expect=Reply, timeout=20
            )
        await rt.idle()
        records, dump = await _journal_dump(rt, run.run_id)
        info = await rt.journal.run(run.run_id)
    assert info.tokens == (11 + 7) + (40 + 9)  # both model calls, counted per run

    assert reply.text == "It is raining in Paris (14 C)."
    assert reply.steps == 2
    assert reply.offline is False
    # The second request carried the tool result back to the model.
    second = openai_server.requests[1].body
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["content"] == "light rain, 14 C"
    assert second["messages"][-1]["tool_call_id"] == "call_7"
    assert openai_server.requests[0].headers["authorization"] == f"Bearer {SECRET}"

    prompt_event = next(
        r for r in records if r["kind"] == "published" and r["type"] == "agents.Prompt"
    )
    calls = [r for r in records if r["kind"] in ("model_call", "tool_call")]
    assert [c["kind"] for c in calls] == ["model_call", "tool_call", "model_call"]
    assert all(c["event_id"] == prompt_event["event_id"] and c["agent"] == "weather" for c in calls)
    assert calls[0]["request"]["tools"][0]["name"] == "city_weather"
    assert calls[1]["request"] == {"arguments": {"city": "Paris"}, "call_id": "call_7"}
    assert calls[1]["response"] == {"content": "light rain, 14 C"}
    assert calls[2]["response"]["usage"] == {"input_tokens": 40, "output_tokens": 9}
    assert [c["call_index"] for c in calls] == [0, 1, 2]
    assert SECRET not in dump
    assert "authorization" not in dump.lower()


async def test_offline_model_answers_with_a_labelled_tool_based_reply() -> None:
    agent = LLMAgent(name="weather", model=OfflineModel(), tools=[city_weather], topic="ask")
    async with Runtime("memory://?journal=") as rt:
        rt.add(agent)
        async with rt.run("offline") as run:
            reply = await run.request(
                "ask", Prompt(text="What is the city weather in Oslo?"), expect=Reply
            )
        records, _ = await _journal_dump(rt, run.run_id)
    assert reply.offline is True
    assert reply.text.startswith("[offline model]")
    assert "snow, -3 C" in reply.text
    tool_calls = [r for r in records if r["kind"] == "tool_call"]
    assert len(tool_calls) == 1
    assert "oslo" in tool_calls[0]["request"]["arguments"]["city"].lower()
    assert tool_calls[0]["response"] == {"content": "snow, -3 C"}


async def test_structured_output_and_memory_per_conversation() -> None:
    from pydantic import BaseModel

    class Verdict(BaseModel):
        label: str
        confidence: float

    memory = Memory(max_messages=10)
    agent = LLMAgent(
        name="judge", model=OfflineModel(), output=Verdict, memory=memory, topic="judge"
    )
    async with Runtime("memory://?journal=") as rt:
        rt.add(agent)
        async with rt.run("judge") as run:
            first = await run.request(
                "judge", Prompt(text="Is this spam?", conversation="c1"), expect=Reply
            )
            await run.request("judge", Prompt(text="And this?", conversation="c1"), expect=Reply)
    assert first.data is not None
    assert Verdict.model_validate(first.data).label.startswith("[offline model]")
    assert [m.role for m in memory.history("c1")] == ["user", "assistant", "user", "assistant"]
    assert memory.history("other") == []


async def test_step_limit_is_reported_to_the_requester(openai_server: OpenAIServer) -> None:
    for n in range(2):
        openai_server.reply_tool_call("city_weather", {"city": "Paris"}, call_id=f"c{n}")
    model = OpenAIChatModel("m", base_url=openai_server.url, api_key=SECRET, max_attempts=1)
    agent = LLMAgent(name="loop", model=model, tools=[city_weather], max_steps=2, topic="loop")
    async with model, Runtime("memory://?journal=", max_attempts=1) as rt:
        rt.add(agent)
        async with rt.run("loop") as run:
            from agentbus import RemoteError

            with pytest.raises(RemoteError) as info:
                await run.request("loop", Prompt(text="weather?"), timeout=20)
    assert info.value.error_type == StepLimitExceeded.__name__
    assert "max_steps=2" in info.value.message
