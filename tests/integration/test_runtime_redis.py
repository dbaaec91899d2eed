"""The runtime end to end, on the memory transport and on a real Redis.

Two runtimes stand for two processes: on Redis each opens its own connections to the
same key prefix; in memory they share one ``MemoryTransport``. Runtimes here use short
blocks and visibility timeouts so that claims, leases and shutdowns happen quickly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from agentbus import (
    Agent,
    Context,
    Envelope,
    JournalRecord,
    MemoryTransport,
    Message,
    MessageTooLarge,
    Reject,
    RemoteError,
    RequestTimeout,
    Runtime,
    handle,
)
from agentbus.testing import wait_for
from agentbus.testing.raw_entries import add_raw

FAST: dict[str, Any] = {
    "block_ms": 100,
    "visibility_timeout": 5.0,
    "retry_backoff": (0.01, 0.05),
    "grace_period": 1.0,
}


class Ping(Message, type="rt.Ping"):
    text: str


class Pong(Message, type="rt.Pong"):
    text: str


class Job(Message, type="rt.Job"):
    n: int


class Note(Message, type="rt.Note"):
    text: str


class Blob(Message, type="rt.Blob"):
    data: str


MakeRuntime = Callable[..., Runtime]


@pytest.fixture
async def make_runtime(backend: str, url_for: str) -> AsyncIterator[MakeRuntime]:
    """Build runtimes joined into one system (closed after the test)."""
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


async def started(make: MakeRuntime, *agents: Agent, **options: Any) -> Runtime:
    rt = make(*agents, **options)
    await rt.start()
    return rt


async def dead_letters(rt: Runtime, topic: str, n: int) -> list[Any]:
    async def enough() -> bool:
        return len(await rt.transport.admin.dead_letters(topic)) >= n

    await wait_for(enough, timeout=10, message=f"{n} dead letters on {topic}")
    return await rt.transport.admin.dead_letters(topic)


async def pending(rt: Runtime, topic: str, group: str) -> int:
    for info in await rt.transport.admin.topics():
        if info.topic == topic:
            return sum(g.pending for g in info.groups if g.name == group)
    return 0


def for_event(records: Sequence[JournalRecord], event_id: str) -> list[JournalRecord]:
    return [r for r in records if r.record.get("event_id") == event_id]


# -- request/reply ----------------------------------------------------------------------------
class Echo(Agent, name="echo"):
    @handle("rt.echo")
    async def on_ping(self, msg: Ping, ctx: Context) -> Pong:
        return Pong(text=msg.text.upper())


async def test_request_reply_across_runtimes(make_runtime: MakeRuntime) -> None:
    await started(make_runtime, Echo())
    client = await started(make_runtime)

    async with client.run("echo") as run:
        reply = await run.request("rt.echo", Ping(text="hi"), timeout=5, expect=Pong)
        second = await client.request("rt.echo", Ping(text="again"), timeout=5)

    assert reply == Pong(text="HI")
    assert second == Pong(text="AGAIN")


async def test_request_timeout_when_nobody_answers(make_runtime: MakeRuntime) -> None:
    client = await started(make_runtime)
    begun = time.monotonic()

    with pytest.raises(RequestTimeout) as info:
        await client.request("rt.nobody", Ping(text="hello?"), timeout=0.3)

    assert isinstance(info.value, TimeoutError)
    assert info.value.topic == "rt.nobody"
    assert "rt.nobody" in str(info.value)
    assert 0.3 <= time.monotonic() - begun < 3


class Fails(Agent, name="fails"):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    @handle("rt.fails")
    async def on_ping(self, msg: Ping, ctx: Context) -> Pong:
        self.calls += 1
        raise ValueError(f"bad input {msg.text!r}")


async def test_remote_error_carries_type_and_message(make_runtime: MakeRuntime) -> None:
    fails = Fails()
    await started(make_runtime, fails, max_attempts=2)
    client = await started(make_runtime)

    with pytest.raises(RemoteError) as info:
        await client.request("rt.fails", Ping(text="x"), timeout=5)

    assert info.value.error_type == "ValueError"
    assert info.value.message == "bad input 'x'"
    assert info.value.agent == "fails"
    assert fails.calls == 2  # retried before giving up


# -- run and causation propagation -----------------------------------------------------------------
class Front(Agent, name="front"):
    @handle("rt.front")
    async def on_ping(self, msg: Ping, ctx: Context) -> Pong:
        await ctx.publish("rt.audit", Note(text="front was here"))
        back: Pong = await ctx.request("rt.back", Ping(text=msg.text), timeout=5, expect=Pong)
        return Pong(text=back.text + "!")


class Back(Agent, name="back"):
    def __init__(self) -> None:
        super().__init__()
        self.run_ids: list[str | None] = []

    @handle("rt.back")
    async def on_ping(self, msg: Ping, ctx: Context) -> Pong:
        self.run_ids.append(ctx.run_id)
        await ctx.publish("rt.audit", Note(text="back was here"))
        return Pong(text=msg.text)


class Auditor(Agent, name="auditor"):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str | None, str | None]] = []

    @handle("rt.audit")
    async def on_note(self, msg: Note, ctx: Context) -> None:
        assert ctx.event is not None
        self.seen.append((msg.text, ctx.run_id, ctx.event.causationid))


async def test_run_and_causation_propagate(make_runtime: MakeRuntime) -> None:
    back, auditor = Back(), Auditor()
    front_rt = await started(make_runtime, Front())
    back_rt = await started(make_runtime, back, auditor)
    client = await started(make_runtime)

    async with client.run("chain") as run:
        reply = await run.request("rt.front", Ping(text="go"), timeout=5, expect=Pong)
        await wait_for(lambda: len(auditor.seen) == 2, message="two audit notes")
    for rt in (front_rt, back_rt, client):
        await rt.idle()

    assert reply == Pong(text="go!")
    assert back.run_ids == [run.run_id]
    events = await client.journal.events(run.run_id)
    assert len(events) == 6
    assert {e.runid for e in events} == {run.run_id}
    (request,) = [e for e in events if e.topic == "rt.front"]
    (to_back,) = [e for e in events if e.topic == "rt.back"]
    notes = {e.source: e for e in events if e.topic == "rt.audit"}
    replies = {e.source: e for e in events if e.type == "rt.Pong"}
    assert (request.source, request.causationid) == ("client", None)
    assert (to_back.source, to_back.causationid) == ("front", request.id)
    assert notes["front"].causationid == request.id
    assert notes["back"].causationid == to_back.id
    assert replies["back"].causationid == to_back.id
    assert replies["back"].correlationid == to_back.correlationid
    assert replies["front"].causationid == request.id
    assert replies["front"].correlationid == request.correlationid
    assert replies["front"].topic == request.replyto
    assert sorted(auditor.seen) == sorted(
        [
            ("front was here", run.run_id, request.id),
            ("back was here", run.run_id, to_back.id),
        ]
    )
    info = await client.journal.run(run.run_id)
    assert (info.status, info.events) == ("completed", 6)


# -- journal completeness, retries and dead letters -------------------------------------------------
class Flaky(Agent, name="flaky"):
    """Job 0 succeeds, job 1 fails once, job 2 always fails."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[int] = Counter()

    @handle("rt.flaky")
    async def on_job(self, job: Job, ctx: Context) -> Pong:
        self.calls[job.n] += 1
        if job.n == 1 and ctx.attempt == 1:
            raise RuntimeError("transient")
        if job.n == 2:
            raise RuntimeError("permanent")
        return Pong(text=str(job.n))


async def test_journal_records_every_publish_and_outcome(make_runtime: MakeRuntime) -> None:
    flaky = Flaky()
    rt = await started(make_runtime, flaky, max_attempts=3)

    async with rt.run("journal") as run:
        assert await run.request("rt.flaky", Job(n=0), timeout=5) == Pong(text="0")
        retried = await run.publish("rt.flaky", Job(n=1))
        doomed = await run.publish("rt.flaky", Job(n=2))
        await dead_letters(rt, "rt.flaky", 1)
        await wait_for(lambda: flaky.calls[1] == 2)
        await rt.idle()
    records = await rt.journal.records(run.run_id)

    assert records[0].kind == "run_started"
    assert records[-1].kind == "run_finished"
    published = [r for r in records if r.kind == "published"]
    assert len(published) == 4  # three jobs and one reply
    request_id = next(r.record["event_id"] for r in published if r.record["type"] == "rt.Job")
    assert [r.kind for r in for_event(records, request_id)] == [
        "published",
        "delivered",
        "replied",
        "handled",
    ]
    assert [r.kind for r in for_event(records, retried)] == [
        "published",
        "delivered",
        "failed",
        "retried",
        "handled",
    ]
    assert [r.kind for r in for_event(records, doomed)] == [
        "published",
        "delivered",
        "failed",
        "retried",
        "failed",
        "retried",
        "failed",
        "dead_lettered",
    ]
    by_kind = {r.kind: r.record for r in for_event(records, retried)}
    assert by_kind["delivered"]["attempt"] == 1
    assert by_kind["delivered"]["consumer"] == rt.consumer
    assert by_kind["failed"]["error"] == "RuntimeError: transient"
    assert by_kind["failed"]["final"] is False
    assert by_kind["retried"]["attempt"] == 2
    assert by_kind["handled"]["attempt"] == 2
    assert by_kind["handled"]["duration_ms"] >= 0
    assert all(r.record["agent"] == "flaky" for r in for_event(records, retried)[1:])
    final = for_event(records, doomed)
    assert final[-2].record["final"] is True
    assert final[-1].record["reason"] == "handler failed"
    assert final[-1].record["attempts"] == 3
    replied = for_event(records, request_id)[2].record
    assert replied["reply_id"] in {r.record["event_id"] for r in published}
    assert (await rt.journal.run(run.run_id)).events == 4


class Doomed(Agent, name="doomed"):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    @handle("rt.doomed")
    async def on_job(self, job: Job, ctx: Context) -> None:
        self.times.append(time.monotonic())
        raise RuntimeError("boom")

    @handle("rt.doomed.once", max_attempts=1)
    async def on_job_once(self, job: Job, ctx: Context) -> None:
        self.times.append(time.monotonic())
        raise RuntimeError("boom once")


async def test_retries_back_off_then_dead_letter(make_runtime: MakeRuntime) -> None:
    doomed = Doomed()
    rt = await started(make_runtime, doomed, max_attempts=3, retry_backoff=(0.1, 1.0))

    event_id = await rt.publish("rt.doomed", Job(n=7))
    (letter,) = await dead_letters(rt, "rt.doomed", 1)

    assert len(doomed.times) == 3
    gaps = [b - a for a, b in zip(doomed.times, doomed.times[1:], strict=False)]
    assert gaps[0] >= 0.045  # backoff(1) is 0.05-0.1 s
    assert gaps[1] >= 0.095  # backoff(2) is 0.1-0.2 s: exponential
    assert letter.reason == "handler failed"
    assert letter.attempts == 3
    assert letter.agent == "doomed"
    assert letter.error == "RuntimeError: boom"
    assert letter.topic == "rt.doomed"
    assert json.loads(letter.payload)["id"] == event_id
    assert await pending(rt, "rt.doomed", "doomed") == 0

    # A handler's own max_attempts overrides the runtime's.
    await rt.publish("rt.doomed.once", Job(n=8))
    (once,) = await dead_letters(rt, "rt.doomed.once", 1)
    assert once.attempts == 1
    assert len(doomed.times) == 4


class Picky(Agent, name="picky"):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    @handle("rt.picky")
    async def on_job(self, job: Job, ctx: Context) -> None:
        self.calls += 1
        raise Reject(f"job {job.n} can never work")


async def test_reject_dead_letters_at_once(make_runtime: MakeRuntime) -> None:
    picky = Picky()
    rt = await started(make_runtime, picky, max_attempts=5)

    async with rt.run("reject") as run:
        event_id = await run.publish("rt.picky", Job(n=3))
        (letter,) = await dead_letters(rt, "rt.picky", 1)
        await rt.idle()

    assert picky.calls == 1
    assert (letter.reason, letter.attempts) == ("rejected", 1)
    assert letter.error == "Reject: job 3 can never work"
    kinds = [r.kind for r in for_event(await rt.journal.records(run.run_id), event_id)]
    assert kinds == ["published", "delivered", "failed", "dead_lettered"]


# -- subscription modes ------------------------------------------------------------------------------
class Worker(Agent, name="worker"):
    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.done: list[int] = []
        self.attempts: list[int] = []

    @handle("rt.jobs")
    async def on_job(self, job: Job, ctx: Context) -> None:
        await asyncio.sleep(self.delay)
        self.done.append(job.n)
        self.attempts.append(ctx.attempt)


async def test_shared_mode_splits_work_exactly_once(make_runtime: MakeRuntime) -> None:
    one, two = Worker(0.01), Worker(0.01)
    rt = await started(make_runtime, one, concurrency=1, batch_size=1)
    await started(make_runtime, two, concurrency=1, batch_size=1)

    for n in range(20):
        await rt.publish("rt.jobs", Job(n=n))
    await wait_for(lambda: len(one.done) + len(two.done) >= 20, message="20 jobs handled")
    await rt.idle()

    assert Counter(one.done + two.done) == Counter(range(20))
    assert one.done, "both replicas should have taken work"
    assert two.done, "both replicas should have taken work"
    assert await pending(rt, "rt.jobs", "worker") == 0


class Watcher(Agent, name="watcher"):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    @handle("rt.news", mode="broadcast")
    async def on_job(self, job: Job, ctx: Context) -> None:
        self.seen.append(job.n)


async def test_broadcast_mode_reaches_every_instance(make_runtime: MakeRuntime) -> None:
    one, two = Watcher(), Watcher()
    rt = await started(make_runtime, one)
    await started(make_runtime, two)

    for n in range(5):
        await rt.publish("rt.news", Job(n=n))
    await wait_for(lambda: len(one.seen) == len(two.seen) == 5, message="both saw all news")

    assert sorted(one.seen) == sorted(two.seen) == [0, 1, 2, 3, 4]


# -- hostile input -----------------------------------------------------------------------------------
class Inbox(Agent, name="inbox"):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[int] = []

    @handle("rt.inbox")
    async def on_job(self, job: Job, ctx: Context) -> None:
        self.got.append(job.n)


def raw_event(**overrides: Any) -> bytes:
    body = {"specversion": "1.0", "id": "01BADEVENT", "source": "tests", "type": "rt.Job"}
    body.update(overrides)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


async def test_undecodable_entries_are_dead_lettered(make_runtime: MakeRuntime) -> None:
    inbox = Inbox()
    rt = await started(make_runtime, inbox)
    transport: Any = rt.transport
    await rt.publish("rt.inbox", Job(n=1))

    garbage = {
        "not an agentbus event": ({"x": b"garbage"}, "no 'e' field"),
        "invalid JSON": ({"e": b'{"specversion": "1.0", '}, ""),
        "unknown message type": ({"e": raw_event(type="rt.NoSuchType")}, "rt.NoSuchType"),
        "invalid payload": ({"e": raw_event(data={"n": "not a number"})}, "n:"),
        "missing CloudEvents attribute": ({"e": raw_event(source=None)}, "source"),
        "invalid UTF-8": ({"e": b'{"specversion": "1.0", "id": "\xff\xfe"}'}, ""),
    }
    origins = {}
    for reason, (fields, _) in garbage.items():
        origins[await add_raw(transport, "rt.inbox", fields)] = reason
    await rt.publish("rt.inbox", Job(n=2))

    letters = await dead_letters(rt, "rt.inbox", len(garbage))
    await wait_for(lambda: sorted(inbox.got) == [1, 2], message="good jobs handled")

    assert {x.origin_id: x.reason for x in letters} == origins
    for x in letters:
        assert garbage[x.reason][1] in x.error
        assert (x.agent, x.attempts) == ("inbox", 1)
    # ... and the runtime keeps going.
    await rt.publish("rt.inbox", Job(n=3))
    await wait_for(lambda: sorted(inbox.got) == [1, 2, 3], message="later job handled")
    await rt.idle()
    assert await pending(rt, "rt.inbox", "inbox") == 0


async def test_message_too_large_is_refused_at_publish(make_runtime: MakeRuntime) -> None:
    rt = await started(make_runtime, max_event_bytes=2000)

    async with rt.run("big") as run:
        with pytest.raises(MessageTooLarge) as info:
            await run.publish("rt.big", Blob(data="x" * 5000))
        with pytest.raises(MessageTooLarge):
            await rt.request("rt.big", Blob(data="y" * 5000), timeout=5)
        await run.publish("rt.big", Blob(data="small"))

    assert info.value.limit == 2000
    assert info.value.size > 2000
    assert "rt.Blob" in str(info.value)
    lengths = {i.topic: i.length for i in await rt.transport.admin.topics()}
    assert lengths["rt.big"] == 1
    assert (await rt.journal.run(run.run_id)).events == 1


# -- de-duplication ------------------------------------------------------------------------------------
class Once(Agent, name="once"):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[str] = []

    @handle("rt.dedupe", dedupe=True)
    async def on_job(self, job: Job, ctx: Context) -> None:
        assert ctx.event is not None
        self.got.append(ctx.event.id)


class Every(Agent, name="every"):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[str] = []

    @handle("rt.dedupe")
    async def on_job(self, job: Job, ctx: Context) -> None:
        assert ctx.event is not None
        self.got.append(ctx.event.id)


async def test_dedupe_skips_redelivered_event_ids(make_runtime: MakeRuntime) -> None:
    once, every = Once(), Every()
    rt = await started(make_runtime, once, every)

    async with rt.run("dedupe") as run:
        env = Envelope.for_message(Job(n=1), source="producer")
        await rt.publish_envelope("rt.dedupe", env)
        await wait_for(lambda: len(every.got) == 1 and len(once.got) == 1)
        await rt.idle()
        await rt.publish_envelope("rt.dedupe", env)  # a producer's retry: same event id
        await wait_for(lambda: len(every.got) == 2)
        await rt.idle()

    assert once.got == [env.id]
    assert every.got == [env.id, env.id]
    kinds = [
        r.kind
        for r in for_event(await rt.journal.records(run.run_id), env.id)
        if r.record.get("agent") == "once"
    ]
    assert kinds == ["delivered", "handled", "duplicate"]


# -- shutdown, leases and crashed consumers ----------------------------------------------------------
class Stuck(Agent, name="stuck"):
    def __init__(self, hang: bool) -> None:
        super().__init__()
        self.hang = hang
        self.started: list[int] = []
        self.finished: list[int] = []

    @handle("rt.stuck")
    async def on_job(self, job: Job, ctx: Context) -> None:
        self.started.append(ctx.attempt)
        if self.hang:
            await asyncio.sleep(60)
        self.finished.append(ctx.attempt)


async def test_graceful_stop_leaves_unfinished_entry_pending(make_runtime: MakeRuntime) -> None:
    probe = await started(make_runtime)
    first = Stuck(hang=True)
    rt = await started(make_runtime, first, consumer="fixed-consumer", grace_period=0.2)
    await probe.publish("rt.stuck", Job(n=1))
    await wait_for(lambda: first.started == [1], message="handler started")

    begun = time.monotonic()
    await rt.aclose()

    assert time.monotonic() - begun < 3
    assert first.finished == []
    assert await pending(probe, "rt.stuck", "stuck") == 1

    # The same consumer, restarted, resumes it from its own pending list at once
    # (long before the 30 s visibility timeout would let anyone claim it).
    second = Stuck(hang=False)
    await started(make_runtime, second, consumer="fixed-consumer", visibility_timeout=30)
    await wait_for(lambda: second.finished == [2], timeout=5, message="resumed after restart")
    await wait_for(lambda: _no_pending(probe, "rt.stuck", "stuck"), timeout=5)
    assert second.started == [2]  # handled once, not again while its ack was in flight
    assert await probe.transport.admin.dead_letters("rt.stuck") == []


async def _no_pending(rt: Runtime, topic: str, group: str) -> bool:
    return await pending(rt, topic, group) == 0


class Slow(Agent, name="slow"):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    @handle("rt.slow")
    async def on_job(self, job: Job, ctx: Context) -> None:
        self.log.append("start")
        await asyncio.sleep(1.0)
        self.log.append("end")


async def test_lease_extension_keeps_long_handlers_unclaimed(make_runtime: MakeRuntime) -> None:
    log: list[str] = []
    rt = make_runtime(Slow(log), visibility_timeout=0.3)
    # Only the second runtime hunts for idle entries, so a lapsed lease would show up
    # as a second "start" (the first runtime would skip its own in-flight entry).
    rt.settings = dataclasses.replace(rt.settings, claim_interval=60)
    await rt.start()
    await rt.publish("rt.slow", Job(n=1))
    await wait_for(lambda: log == ["start"], message="slow job started")
    await started(make_runtime, Slow(log), visibility_timeout=0.3)

    await wait_for(lambda: len(log) >= 2, timeout=5, message="slow job handled")
    await rt.idle()

    # Busy for 1 s against a 0.3 s visibility timeout, yet nobody claimed it.
    assert log == ["start", "end"]
    assert await pending(rt, "rt.slow", "slow") == 0


async def test_dead_consumers_entries_are_claimed(make_runtime: MakeRuntime) -> None:
    probe = await started(make_runtime)
    await probe.transport.create_group("rt.jobs", "worker")
    for n in range(3):
        await probe.publish("rt.jobs", Job(n=n))
    taken = await probe.transport.read_group("worker", "dead", ["rt.jobs"], count=10, block_ms=None)
    assert len(taken) == 3  # read, never acknowledged: the consumer "died"

    worker = Worker()
    await started(make_runtime, worker, visibility_timeout=0.3)
    await wait_for(lambda: len(worker.done) == 3, timeout=10, message="claimed and handled")
    await probe.idle()

    assert sorted(worker.done) == [0, 1, 2]
    assert worker.attempts == [2, 2, 2]  # the dead consumer's read was the first delivery
    await wait_for(lambda: _no_pending(probe, "rt.jobs", "worker"), timeout=5)


class Patient(Agent, name="patient"):
    """Times out on its first await; the timeout must cancel this handler, nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: list[str] = []
        self.tasks: set[asyncio.Task[Any] | None] = set()

    @handle("rt.patient")
    async def on_job(self, job: Job, ctx: Context) -> None:
        self.tasks.add(asyncio.current_task())
        try:
            async with asyncio.timeout(0.05):
                await asyncio.Event().wait()
        except TimeoutError:
            self.outcomes.append(f"timed out {job.n}")


async def test_a_handler_runs_in_its_own_task(make_runtime: MakeRuntime) -> None:
    # Regression: handlers started by hand-driven "eager" steps saw the read loop as the
    # current task, so asyncio.timeout cancelled the read loop instead of the handler.
    patient = Patient()
    rt = await started(make_runtime, patient)
    for n in range(3):
        await rt.publish("rt.patient", Job(n=n))
    await wait_for(lambda: len(patient.outcomes) == 3, timeout=10, message="3 timeouts")
    await rt.publish("rt.patient", Job(n=3))  # the read loop still reads
    await wait_for(lambda: len(patient.outcomes) == 4, timeout=10, message="a 4th timeout")
    assert sorted(patient.outcomes) == [f"timed out {n}" for n in range(4)]
    assert len(patient.tasks) == 4  # each handler ran in a task of its own
    assert None not in patient.tasks
    await rt.idle()
    assert await pending(rt, "rt.patient", "patient") == 0
