"""``Agent.bind``: a handler bound to a topic chosen per instance, with ``@handle``'s options."""

from __future__ import annotations

from typing import Any

import pytest

from agentbus import Agent, Context, HandlerSpec, Message, Runtime, UsageError, handle


class Question(Message, type="unit.bind.Question"):
    text: str


class Answer(Message, type="unit.bind.Answer"):
    text: str
    desk: str


class Desk(Agent, name="desk"):
    """Answers questions on whichever topic it is given."""

    def __init__(self, *, topic: str, name: str | None = None, **options: Any) -> None:
        super().__init__(name=name)
        self.spec = self.bind(topic, self.on_question, **options)

    async def on_question(self, q: Question, ctx: Context) -> Answer:
        return Answer(text=q.text.upper(), desk=self.name)


class DeskWithDecorated(Desk):
    @handle("unit.bind.fixed")
    async def on_fixed(self, q: Question, ctx: Context) -> None:
        pass


def test_bind_returns_the_spec_and_handlers_list_it() -> None:
    desk = Desk(topic="unit.bind.a", mode="broadcast", max_attempts=2, from_start=False)
    assert desk.spec == HandlerSpec(
        topic="unit.bind.a",
        method="on_question",
        mode="broadcast",
        message_types=None,
        output=None,
        dedupe=False,
        max_attempts=2,
        from_start=False,
    )
    assert desk.handlers() == [(desk.spec, (Question,))]


def test_instance_bindings_come_after_decorated_handlers() -> None:
    desk = DeskWithDecorated(topic="unit.bind.b", message=Question, timeout=3.0)
    specs = desk.handlers()
    assert [(s.topic, s.method) for s, _ in specs] == [
        ("unit.bind.fixed", "on_fixed"),
        ("unit.bind.b", "on_question"),
    ]
    assert specs[1][0].message_types == (Question,)
    assert specs[1][0].timeout == 3.0


def test_bindings_are_per_instance() -> None:
    one, two = Desk(topic="unit.bind.one"), Desk(topic="unit.bind.two")
    assert [s.topic for s, _ in one.handlers()] == ["unit.bind.one"]
    assert [s.topic for s, _ in two.handlers()] == ["unit.bind.two"]


@pytest.mark.parametrize(
    ("options", "offending"),
    [
        ({"topic": "bad topic"}, "bad topic"),
        ({"topic": "unit.bind.x", "mode": "fanout"}, "fanout"),
        ({"topic": "unit.bind.x", "output": "no good"}, "no good"),
        ({"topic": "unit.bind.x", "max_attempts": 0}, "0"),
        ({"topic": "unit.bind.x", "timeout": -1.0}, "-1"),
    ],
)
def test_bad_options_raise_usage_error_like_handle(options: dict[str, Any], offending: str) -> None:
    with pytest.raises(UsageError, match=offending):
        Desk(**options)


def test_bind_refuses_what_is_not_an_async_method_of_this_agent() -> None:
    class Sync(Agent):
        def __init__(self) -> None:
            super().__init__()
            self.bind("unit.bind.s", self.on_q)

        def on_q(self, q: Question, ctx: Context) -> None:
            pass

    class Stranger(Agent):
        def __init__(self, other: Desk) -> None:
            super().__init__()
            self.bind("unit.bind.s", other.on_question)

    class Untyped(Agent):
        def __init__(self) -> None:
            super().__init__()
            self.bind("unit.bind.s", self.on_q)

        async def on_q(self, q: int, ctx: Context) -> None:
            pass

    with pytest.raises(UsageError, match="async def"):
        Sync()
    with pytest.raises(UsageError, match="method of this agent"):
        Stranger(Desk(topic="unit.bind.t"))
    with pytest.raises(UsageError, match="method of this agent"):
        Desk(topic="unit.bind.u").bind("unit.bind.u", print)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="int"):
        Untyped()


async def test_two_instances_of_one_class_answer_on_their_own_topics() -> None:
    async with Runtime("memory://?journal=", block_ms=50) as rt:
        rt.add(
            Desk(topic="unit.bind.left", name="left"), Desk(topic="unit.bind.right", name="right")
        )
        async with rt.run("desks") as run:
            left = await run.request("unit.bind.left", Question(text="a"), expect=Answer)
            right = await run.request("unit.bind.right", Question(text="b"), expect=Answer)
    assert (left.desk, left.text) == ("left", "A")
    assert (right.desk, right.text) == ("right", "B")
