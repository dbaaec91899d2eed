"""Hung handlers time out, stuck topics do not starve others, outages cost no attempts.

Each runs on both transports (the embedded one and a real Redis) where it can; the
outage test stops a private ``redis-server`` for longer than the old bounded wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbus import (
    Agent,
    Context,
    HandlerTimeout,
    Message,
    RemoteError,
    Runtime,
    UsageError,
    handle,
)
from agentbus.testing import wait_for
from agentbus.testing.redis_server import RedisServer


class Job(Message, type="to.Job"):
    n: int


class Done(Message, type="to.Done"):
    n: int


class Sleepy(Agent, name="to-sleepy"):
    """Hangs on its first ``hang_attempts`` attempts of every job, then answers."""

    def __init__(self, hang_attempts: int) -> None:
        super().__init__()
        self.hang_attempts = hang_attempts
        self.attempts: list[tuple[int, int]] = []

    @handle("to.jobs", timeout=0.3)
    async def work(self, job: Job, ctx: Context) -> Done:
        self.attempts.append((job.n, ctx.attempt))
        if ctx.attempt <= self.hang_attempts:
            await asyncio.Event().wait()  # never returns
        return Done(n=job.n)


async def test_a_hung_handler_is_timed_out_and_retried(url_for: str) -> None:
    sleepy = Sleepy(hang_attempts=1)
    async with Runtime(url_for, retry_backoff=(0.01, 0.02)) as rt:
        rt.add(sleepy)
        async with rt.run("timeouts") as run:
            done = await run.request("to.jobs", Job(n=1), expect=Done, timeout=10)
        await rt.idle()
        records = [r.record for r in await rt.transport.store.read_journal(run.run_id)]
    assert done.n == 1
    assert sleepy.attempts == [(1, 1), (1, 2)]
    failed = [r for r in records if r["kind"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["error_type"] == "HandlerTimeout"
    assert "within 0.3s" in failed[0]["error"]
    assert [r["attempt"] for r in records if r["kind"] == "handled"] == [2]


async def test_a_handler_that_always_hangs_is_dead_lettered_and_the_requester_told(
    url_for: str,
) -> None:
    sleepy = Sleepy(hang_attempts=99)
    async with Runtime(url_for, retry_backoff=(0.01, 0.02), max_attempts=2) as rt:
        rt.add(sleepy)
        async with rt.run("timeouts") as run:
            with pytest.raises(RemoteError) as info:
                await run.request("to.jobs", Job(n=7), expect=Done, timeout=10)
        await rt.idle()
        letters = await rt.transport.admin.dead_letters("to.jobs")
    assert "HandlerTimeout" in str(info.value)
    assert len(sleepy.attempts) == 2
    assert len(letters) == 1
    assert letters[0].reason == "handler failed"
    assert "HandlerTimeout" in letters[0].error


class Hangs(Agent, name="to-default"):
    @handle("to.default")
    async def work(self, job: Job, ctx: Context) -> None:
        await asyncio.Event().wait()


async def test_the_runtime_default_timeout_applies_to_handlers_without_one() -> None:
    async with Runtime(
        "memory://?journal=", handler_timeout=0.2, max_attempts=1, retry_backoff=(0.01, 0.02)
    ) as rt:
        rt.add(Hangs())
        async with rt.run("default"):
            await rt.publish("to.default", Job(n=1))
        letters: list[object] = []

        async def dead_lettered() -> bool:
            letters[:] = await rt.transport.admin.dead_letters("to.default")
            return bool(letters)

        await wait_for(dead_lettered, timeout=10, message="the hung event dead-lettered")


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(UsageError, match="timeout"):
        handle("to.x", timeout=0)
    with pytest.raises(UsageError, match="handler_timeout"):
        Runtime("memory://?journal=", handler_timeout=-1)
    assert issubclass(HandlerTimeout, TimeoutError)


class TwoTopics(Agent, name="to-two"):
    """Handlers of ``to.stuck`` wait on a gate; those of ``to.flowing`` answer at once."""

    concurrency = 2

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.stuck: list[int] = []
        self.flowing: list[int] = []

    @handle("to.stuck")
    async def stuck_one(self, job: Job, ctx: Context) -> None:
        self.stuck.append(job.n)
        await self.gate.wait()

    @handle("to.flowing")
    async def flowing_one(self, job: Job, ctx: Context) -> None:
        self.flowing.append(job.n)


async def test_stuck_handlers_on_one_topic_do_not_starve_the_agents_other_topics(
    url_for: str,
) -> None:
    agent = TwoTopics()
    async with Runtime(url_for, handler_timeout=None) as rt:
        rt.add(agent)
        async with rt.run("starve"):
            for n in range(5):  # more than the agent's concurrency, all stuck
                await rt.publish("to.stuck", Job(n=n))
            await wait_for(lambda: len(agent.stuck) == 2, message="two stuck handlers")
            for n in range(3):
                await rt.publish("to.flowing", Job(n=n))
            await wait_for(
                lambda: sorted(agent.flowing) == [0, 1, 2],
                timeout=10,
                message="the other topic's events handled while the first is stuck",
            )
            assert len(agent.stuck) == 2  # the stuck topic stays at its bound
            agent.gate.set()
            await wait_for(lambda: len(agent.stuck) == 5, timeout=10, message="the rest")


# -- outages ------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(directory=tmp_path / "redis", appendonly=True, appendfsync="always") as s:
        yield s


class Forwarder(Agent, name="to-forward"):
    """Waits on a gate, then publishes; the test takes Redis away while it waits."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.attempts: list[int] = []

    @handle("to.in", output="to.out")
    async def forward(self, job: Job, ctx: Context) -> Done:
        self.attempts.append(ctx.attempt)
        self.started.set()
        await self.gate.wait()
        await ctx.publish("to.side", Done(n=-job.n))  # fails while Redis is down
        return Done(n=job.n)


@pytest.mark.redis
@pytest.mark.slow
async def test_an_outage_of_any_length_uses_up_no_attempts(server: RedisServer) -> None:
    forwarder = Forwarder()
    # Short backoffs: the 3 s outage below is well over a hundred failed tries, far past
    # the old bound of 20 after which the event was dead-lettered as a handler failure.
    async with Runtime(
        server.url + "?prefix=to:",
        retry_backoff=(0.01, 0.03),
        max_attempts=2,
        visibility_timeout=60,
    ) as rt:
        rt.add(forwarder)
        async with rt.run("outage") as run:
            await rt.publish("to.in", Job(n=1))
            await asyncio.wait_for(forwarder.started.wait(), timeout=10)
            server.stop()
            forwarder.gate.set()
            await asyncio.sleep(3.0)
            server.start()

            async def forwarded() -> bool:
                out = await rt.transport.read_tail("to.out", "0-0", count=10, block_ms=None)
                return len(out) == 1

            await wait_for(forwarded, timeout=30, interval=0.1, message="the output published")
        await rt.idle()
        records = [r.record for r in await rt.transport.store.read_journal(run.run_id)]
        assert await rt.transport.admin.dead_letters("to.in") == []
    # Re-run while Redis was away, far more often than the old bound (20), all as attempt 1.
    assert len(forwarder.attempts) > 20
    assert set(forwarder.attempts) == {1}
    assert not [r for r in records if r["kind"] in ("failed", "dead_lettered")]
    assert [r["attempt"] for r in records if r["kind"] == "handled"] == [1]
