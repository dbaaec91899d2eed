"""Resume after a crash: a redelivered handler gets its crashed attempt's calls from the journal.

Two runtimes stand for two processes (on Redis each has its own connections; in memory they
share one ``MemoryTransport``). The first one's handler makes some calls and stalls; the
runtime is then stopped at once (``grace=0``), which leaves the delivery pending with no
outcome, as a crash does. The second claims it after the visibility timeout. The real
SIGKILL of a worker process is in ``tests/llm/test_resume_worker.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from agentbus import Agent, Context, MemoryTransport, Message, Runtime, handle
from agentbus.inspect import build_trace, render_tree
from agentbus.testing import wait_for
from agentbus.transports import JournalRecord

FAST: dict[str, Any] = {
    "block_ms": 50,
    "visibility_timeout": 0.5,
    "retry_backoff": (0.01, 0.05),
    "grace_period": 1.0,
}
GO = "resume.go"
STEPS = 3


class Go(Message, type="resume.Go"):
    topic: str


class Answers(Message, type="resume.Answers"):
    answers: list[str]


class Thinker(Agent, name="resume-thinker"):
    """Makes ``STEPS`` tool calls for one event; each live call is counted in ``made``.

    ``stall_at``: the attempt hangs before that call (the test then "crashes" it).
    ``fail_at``: the first attempt raises after that many calls (a handler exception).
    ``ask``: what the calls ask (a different one than the crashed attempt's: mismatch).
    """

    def __init__(
        self,
        label: str,
        *,
        stall_at: int | None = None,
        fail_at: int | None = None,
        ask: str = "think",
    ) -> None:
        super().__init__()
        self.label = label
        self.stall_at = stall_at
        self.fail_at = fail_at
        self.ask = ask
        self.made: list[int] = []
        self.results: list[list[str]] = []
        self.attempts: list[int] = []

    @handle(GO)
    async def go(self, msg: Go, ctx: Context) -> None:
        self.attempts.append(ctx.attempt)
        answers: list[str] = []
        for step in range(STEPS):
            if step == self.stall_at:
                await asyncio.Event().wait()  # hangs until the runtime is stopped
            if self.fail_at is not None and step == self.fail_at:
                self.fail_at = None
                raise RuntimeError("the handler failed once")

            async def call(step: int = step) -> dict[str, Any]:
                self.made.append(step)
                return {"answer": f"{self.label}{step}"}

            response = await ctx.invoke("tool", "think", {"about": msg.topic, "q": self.ask}, call)
            answers.append(response["answer"])
        self.results.append(answers)


@pytest.fixture
async def make_runtime(backend: str, url_for: str) -> AsyncIterator[Callable[..., Runtime]]:
    shared = MemoryTransport() if backend == "memory" else None
    made: list[Runtime] = []

    def make(*agents: Agent, **options: Any) -> Runtime:
        options = {**FAST, **options}
        rt = Runtime(transport=shared, **options) if shared else Runtime(url_for, **options)
        rt.add(*agents)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.aclose()
    if shared is not None:
        await shared.aclose()


def calls_of(records: list[JournalRecord], event_id: str) -> list[dict[str, Any]]:
    return [
        r.record for r in records if r.kind == "tool_call" and r.record.get("event_id") == event_id
    ]


async def crash_after_two_calls(
    make: Callable[..., Runtime],
) -> tuple[Runtime, str, str]:
    """Runtime A handles an event, records 2 calls and is stopped mid-handler; returns a
    reader runtime, the run id and the event id."""
    first = Thinker("a", stall_at=2)
    a = make(first, consumer="a")
    await a.start()
    async with a.run("resume") as run:
        event_id = await run.publish(GO, Go(topic="tides"))

    async def two_calls() -> bool:
        return len(calls_of(await a.journal.records(run.run_id), event_id)) == 2

    await wait_for(two_calls, timeout=10, message="the first attempt made 2 calls")
    assert first.made == [0, 1]
    await a.aclose(grace=0)  # no outcome: the delivery stays pending, as after a crash
    reader = make(consumer="reader")
    await reader.start()
    return reader, run.run_id, event_id


async def outcome(rt: Runtime, run_id: str, event_id: str, kind: str) -> list[JournalRecord]:
    async def done() -> bool:
        records = await rt.journal.records(run_id)
        return any(r.kind == kind and r.record.get("event_id") == event_id for r in records)

    await wait_for(done, timeout=15, message=f"a {kind} record for the event")
    return await rt.journal.records(run_id)


async def test_a_redelivered_handler_makes_only_the_calls_the_crash_left(
    make_runtime: Callable[..., Runtime],
) -> None:
    reader, run_id, event_id = await crash_after_two_calls(make_runtime)
    second = Thinker("b")
    await make_runtime(second, consumer="b").start()
    records = await outcome(reader, run_id, event_id, "handled")

    assert second.made == [2]  # calls 0 and 1 were answered from the journal
    assert second.results == [["a0", "a1", "b2"]]
    assert second.attempts == [2]
    calls = calls_of(records, event_id)
    assert [(c["call_index"], c.get("resumed", False), c["substituted"]) for c in calls] == [
        (0, False, False),
        (1, False, False),
        (0, True, True),
        (1, True, True),
        (2, False, False),
    ]
    assert calls[2]["response"] == {"answer": "a0"}
    info = await reader.journal.run(run_id)
    assert info is not None
    tree = render_tree(build_trace(info, records))
    assert "resumed 2 calls from the journal" in tree
    (delivery,) = build_trace(info, records).events[0].deliveries.values()
    assert (delivery.outcome, delivery.resumed, delivery.attempts) == ("handled", 2, 2)


async def test_a_different_call_at_a_recorded_index_fails_the_attempt(
    make_runtime: Callable[..., Runtime],
) -> None:
    reader, run_id, event_id = await crash_after_two_calls(make_runtime)
    changed = Thinker("b", ask="something else")
    await make_runtime(changed, consumer="b").start()
    records = await outcome(reader, run_id, event_id, "handled")

    failed = [r.record for r in records if r.kind == "failed"]
    assert len(failed) == 1
    assert failed[0]["error_type"] == "ResumeMismatch"
    assert "different request" in failed[0]["error"]
    # Never a wrong answer: the mismatching call got none, and the retry (after a
    # failure, not a crash) made every call live.
    assert changed.made == [0, 1, 2]
    assert changed.results == [["b0", "b1", "b2"]]
    calls = calls_of(records, event_id)
    assert not any(c.get("resumed") for c in calls)
    assert "ResumeMismatch" in calls[2]["error"]


async def test_a_retry_after_an_exception_calls_live(
    make_runtime: Callable[..., Runtime],
) -> None:
    thinker = Thinker("a", fail_at=2)
    rt = make_runtime(thinker, consumer="a")
    await rt.start()
    async with rt.run("retry") as run:
        event_id = await run.publish(GO, Go(topic="tides"))
    records = await outcome(rt, run.run_id, event_id, "handled")

    assert thinker.made == [0, 1, 0, 1, 2]  # the failed attempt's calls were made again
    assert thinker.results == [["a0", "a1", "a2"]]
    assert not any(c.get("resumed") for c in calls_of(records, event_id))


async def test_a_redelivery_after_a_failed_attempt_calls_live(
    make_runtime: Callable[..., Runtime],
) -> None:
    """A crash during the backoff after a failure: the last outcome is the failure, so
    the calls before it belong to a finished attempt and are made again."""
    first = Thinker("a", fail_at=2)
    a = make_runtime(first, consumer="a", retry_backoff=(30.0, 30.0))
    await a.start()
    async with a.run("retry-crash") as run:
        event_id = await run.publish(GO, Go(topic="tides"))
    await outcome(a, run.run_id, event_id, "retried")
    await a.aclose(grace=0)
    second = Thinker("b")
    await make_runtime(second, consumer="b").start()
    reader = make_runtime(consumer="reader")
    await reader.start()
    records = await outcome(reader, run.run_id, event_id, "handled")

    assert second.made == [0, 1, 2]
    assert not any(c.get("resumed") for c in calls_of(records, event_id))


@pytest.mark.redis
async def test_a_crashed_attempt_s_calls_left_in_an_outbox_are_resumed(
    redis_url: str, redis_prefix: str
) -> None:
    """The crashed process wrote its call records into a topic's outbox (with an ack
    of another delivery) and died before copying them to the run: the resume copies
    them first, so they count."""
    from agentbus._resume import RELAY_GRACE_S, Resumer
    from agentbus.transports import JournalEntry
    from agentbus.transports.redis import RedisStreamsTransport

    t = RedisStreamsTransport(redis_url, prefix=redis_prefix)
    await t.connect()
    try:
        made = [
            JournalEntry(
                "run-1",
                {
                    "kind": "tool_call",
                    "time": 0.0,
                    "name": "think",
                    "agent": "thinker",
                    "event_id": "e1",
                    "call_index": i,
                    "request": {"i": i},
                    "substituted": False,
                    "response": {"answer": i},
                },
            )
            for i in range(2)
        ]
        entry = t.store.outbox("other.topic", made)
        assert entry is not None
        await t._r.xadd(entry.key, entry.fields())  # ... and no relay: the process died
        assert await t.store.read_journal("run-1") == []
        await asyncio.sleep(RELAY_GRACE_S + 0.1)
        tape = await Resumer(t.store).tape("run-1", "e1", "thinker")
        assert tape is not None
        assert tape.answer("tool", "think", {"i": 1}, 1) == {"answer": 1}
        assert sorted(tape.calls) == [0, 1]
    finally:
        await t.admin.delete_prefix()
        await t.aclose()


async def test_a_second_crash_resumes_from_the_first_attempt_s_calls(
    make_runtime: Callable[..., Runtime],
) -> None:
    reader, run_id, event_id = await crash_after_two_calls(make_runtime)
    again = Thinker("b", stall_at=2)  # resumes calls 0 and 1, then hangs as well
    b = make_runtime(again, consumer="b")
    await b.start()

    async def resumed_two() -> bool:
        calls = calls_of(await reader.journal.records(run_id), event_id)
        return sum(bool(c.get("resumed")) for c in calls) == 2

    await wait_for(resumed_two, timeout=10, message="the second attempt resumed 2 calls")
    await b.aclose(grace=0)
    last = Thinker("c")
    await make_runtime(last, consumer="c").start()
    records = await outcome(reader, run_id, event_id, "handled")

    assert (again.made, last.made) == ([], [2])
    assert last.results == [["a0", "a1", "c2"]]
    assert last.attempts == [3]
    resumed = [c["call_index"] for c in calls_of(records, event_id) if c.get("resumed")]
    assert resumed == [0, 1, 0, 1]


async def test_first_deliveries_never_read_the_journal(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentbus._resume import Resumer

    reads: list[str] = []
    original = Resumer.tape

    async def counted(self: Resumer, run_id: str, event_id: str, agent: str) -> Any:
        reads.append(event_id)
        return await original(self, run_id, event_id, agent)

    monkeypatch.setattr(Resumer, "tape", counted)
    thinker = Thinker("a")
    rt = make_runtime(thinker, consumer="a")
    await rt.start()
    async with rt.run("first") as run:
        ids = [await run.publish(GO, Go(topic=f"t{i}")) for i in range(5)]
    for event_id in ids:
        await outcome(rt, run.run_id, event_id, "handled")
    assert reads == []
    assert len(thinker.made) == 5 * STEPS


class Progress(Message, type="resume.Progress"):
    step: int


class Reporter(Thinker, name="resume-thinker"):
    """A Thinker that publishes a progress event after each call."""

    @handle(GO)
    async def go(self, msg: Go, ctx: Context) -> None:
        self.attempts.append(ctx.attempt)
        for step in range(STEPS):
            if step == self.stall_at:
                await asyncio.Event().wait()

            async def call(step: int = step) -> dict[str, Any]:
                self.made.append(step)
                return {"answer": f"{self.label}{step}"}

            await ctx.invoke("tool", "think", {"about": msg.topic}, call)
            await ctx.publish("resume.progress", Progress(step=step))


async def test_events_the_crashed_attempt_published_are_not_published_again(
    make_runtime: Callable[..., Runtime],
) -> None:
    first = Reporter("a", stall_at=2)
    a = make_runtime(first, consumer="a")
    await a.start()
    async with a.run("resume") as run:
        event_id = await run.publish(GO, Go(topic="tides"))

    def progress(records: list[JournalRecord]) -> list[int]:
        return [
            r.record["event"]["data"]["step"]
            for r in records
            if r.kind == "published" and r.record["topic"] == "resume.progress"
        ]

    async def two_published() -> bool:
        return progress(await a.journal.records(run.run_id)) == [0, 1]

    await wait_for(two_published, timeout=10, message="the first attempt published 2 events")
    await a.aclose(grace=0)
    reader = make_runtime(consumer="reader")
    await reader.start()
    second = Reporter("b")
    await make_runtime(second, consumer="b").start()
    records = await outcome(reader, run.run_id, event_id, "handled")

    assert second.made == [2]
    assert progress(records) == [0, 1, 2]  # 0 and 1 were not published again
    info = await reader.journal.run(run.run_id)
    assert info is not None
    assert "resumed 2 calls and 2 events from the journal" in render_tree(
        build_trace(info, records)
    )
