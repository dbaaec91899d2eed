"""Agents, handler declarations and the configuration errors they raise early."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agentbus import Agent, Context, Message, Runtime, UsageError, handle


class Ask(Message, type="unit.agent.Ask"):
    text: str


class Tell(Message, type="unit.agent.Tell"):
    text: str


class ResearchAssistant(Agent):
    @handle("unit.questions")
    async def on_ask(self, msg: Ask, ctx: Context) -> None:
        pass


class Named(Agent, name="librarian"):
    @handle("unit.questions", mode="broadcast", output="unit.answers", dedupe=True)
    async def on_ask(self, msg: Ask | Tell, ctx: Context) -> Tell:
        return Tell(text="ok")

    @handle("unit.more", Tell, max_attempts=2, from_start=False)
    async def on_more(self, msg: Any, ctx: Context) -> None:
        pass


class Junior(Named):
    pass


def test_agent_names() -> None:
    assert ResearchAssistant().name == "research_assistant"
    assert Named().name == "librarian"
    assert Named(name="librarian-2").name == "librarian-2"
    assert Named().name == "librarian"  # the override is per instance
    assert Junior().name == "junior"
    assert repr(Named()) == "<Named name='librarian'>"


def test_handlers_resolve_message_types() -> None:
    specs = {spec.method: (spec, types) for spec, types in Named().handlers()}

    ask_spec, ask_types = specs["on_ask"]
    assert ask_types == (Ask, Tell)
    assert (ask_spec.topic, ask_spec.mode, ask_spec.output, ask_spec.dedupe) == (
        "unit.questions",
        "broadcast",
        "unit.answers",
        True,
    )
    more_spec, more_types = specs["on_more"]
    assert more_types == (Tell,)
    assert (more_spec.mode, more_spec.max_attempts, more_spec.from_start) == ("shared", 2, False)
    # Inherited handlers count once.
    assert sorted(s.method for s, _ in Junior().handlers()) == ["on_ask", "on_more"]


def test_one_method_on_two_topics() -> None:
    class Twice(Agent):
        @handle("unit.a")
        @handle("unit.b")
        async def on_ask(self, msg: Ask, ctx: Context) -> None:
            pass

    assert sorted(s.topic for s, _ in Twice().handlers()) == ["unit.a", "unit.b"]


@pytest.mark.parametrize("topic", ["", "two words", "star*", "tab\t"])
def test_handle_rejects_bad_topics(topic: str) -> None:
    with pytest.raises(UsageError) as info:
        handle(topic)
    assert repr(topic) in str(info.value)


def test_handle_rejects_bad_options() -> None:
    with pytest.raises(UsageError, match="'everyone'"):
        handle("unit.t", mode="everyone")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="'bad output'"):
        handle("unit.t", output="bad output")
    with pytest.raises(UsageError, match="got 0"):
        handle("unit.t", max_attempts=0)


def test_handle_requires_async_functions() -> None:
    def sync_handler(self: Any, msg: Ask, ctx: Context) -> None:
        pass

    with pytest.raises(UsageError, match=r"sync_handler.*async def"):
        handle("unit.t")(sync_handler)  # type: ignore[type-var]


def test_handler_annotations_are_checked() -> None:
    class NoAnnotation(Agent):
        @handle("unit.t")
        async def on_it(self, msg, ctx):  # type: ignore[no-untyped-def]
            pass

    class NotAMessage(Agent):
        @handle("unit.t")
        async def on_it(self, msg: dict[str, Any], ctx: Context) -> None:
            pass

    class TooFewParameters(Agent):
        @handle("unit.t")
        async def on_it(self, msg: Ask) -> None:
            pass

    with pytest.raises(UsageError, match=r"annotate its message parameter.*None"):
        NoAnnotation().handlers()
    with pytest.raises(UsageError, match="dict"):
        NotAMessage().handlers()
    with pytest.raises(UsageError, match="got 2 parameters"):
        TooFewParameters().handlers()


def test_unresolvable_annotation_names_the_handler() -> None:
    class Local(Agent):
        @handle("unit.t")
        async def on_it(self, msg: Undefined, ctx: Context) -> None:  # type: ignore[name-defined]  # noqa: F821
            pass

    with pytest.raises(UsageError, match=r"on_it.*Undefined"):
        Local().handlers()


async def test_runtime_add_validates_agents() -> None:
    class Broken(Agent):
        @handle("unit.t")
        async def on_it(self, msg: int, ctx: Context) -> None:
            pass

    rt = Runtime("memory://?journal=")
    with pytest.raises(UsageError, match="'Ask'"):
        rt.add(Ask(text="not an agent"))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="int"):
        rt.add(Broken())
    assert rt.agents == ()


async def test_runtime_refuses_two_handlers_for_one_type() -> None:
    class Doubled(Agent):
        @handle("unit.t")
        async def first(self, msg: Ask, ctx: Context) -> None:
            pass

        @handle("unit.t")
        async def second(self, msg: Ask, ctx: Context) -> None:
            pass

    rt = Runtime("memory://?journal=")
    try:
        # Refused when added, not later at start or in a background task.
        with pytest.raises(UsageError, match=re.escape("two handlers for 'unit.agent.Ask'")):
            rt.add(Doubled())
        assert rt.agents == ()
    finally:
        await rt.aclose()


@pytest.mark.parametrize(
    ("options", "offending"),
    [
        ({"concurrency": 0}, "0"),
        ({"batch_size": -1}, "-1"),
        ({"max_attempts": 0}, "0"),
        ({"visibility_timeout": 0}, "0"),
    ],
)
def test_runtime_options_are_checked(options: dict[str, Any], offending: str) -> None:
    with pytest.raises(UsageError, match=offending):
        Runtime("memory://?journal=", **options)
