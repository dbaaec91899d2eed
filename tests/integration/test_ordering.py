"""The order a handler sees events in: each promise of docs/ordering.md, on both transports.

The per-key order of partitioned topics across replicas (and across a SIGKILL and a
rebalance) is tested in test_partitions.py and test_partitions_workers.py; the order of a
de-duplicated handler's outputs against the same process's later publishes in
test_outbox_redis.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from agentbus import Agent, Context, MemoryTransport, Message, Runtime, handle
from agentbus.testing import wait_for

FAST: dict[str, Any] = {"block_ms": 50, "retry_backoff": (0.05, 0.05)}
N = 60


class Item(Message, type="ordering.Item"):
    n: int


class Recorder(Agent, name="ordering-recorder"):
    """Records when each event's handler starts and ends; ``fail_once`` fails them once."""

    def __init__(self, *, fail_once: set[int] | None = None, pause: float = 0.0) -> None:
        super().__init__()
        self.started: list[int] = []
        self.ended: list[int] = []
        self.fail_once = set(fail_once or ())
        self.pause = pause

    @handle("ordering.items")
    async def on_item(self, item: Item, ctx: Context) -> None:
        self.started.append(item.n)
        await asyncio.sleep(self.pause * ((N - item.n) % 3))  # later ones may finish first
        if item.n in self.fail_once:
            self.fail_once.discard(item.n)
            raise RuntimeError("fails once")
        self.ended.append(item.n)


@pytest.fixture
async def host(url_for: str) -> AsyncIterator[Callable[..., Any]]:
    made: list[Runtime] = []

    async def start(agent: Recorder, **options: Any) -> Runtime:
        rt = Runtime(url_for, **{**FAST, **options})
        rt.add(agent)
        await rt.start()
        made.append(rt)
        return rt

    yield start
    for rt in made:
        await rt.aclose()


async def publish_all(rt: Runtime) -> None:
    async with rt.run("ordering") as run:
        for n in range(N):  # one producer, one after another
            await run.publish("ordering.items", Item(n=n))


async def all_ended(agent: Recorder) -> None:
    async def done() -> bool:
        return len(agent.ended) == N

    await wait_for(done, timeout=20, message=f"{N} events handled")


async def test_one_consumer_with_concurrency_one_handles_in_publish_order(
    host: Callable[..., Any],
) -> None:
    agent = Recorder(pause=0.002)
    rt = await host(agent, concurrency=1)
    await publish_all(rt)
    await all_ended(agent)
    assert agent.started == list(range(N))
    assert agent.ended == list(range(N))


async def test_concurrent_handlers_start_in_publish_order_and_may_end_in_any(
    host: Callable[..., Any],
) -> None:
    agent = Recorder(pause=0.01)
    rt = await host(agent)  # default concurrency: 64 at once
    await publish_all(rt)
    await all_ended(agent)
    assert agent.started == list(range(N))
    assert sorted(agent.ended) == list(range(N))
    assert agent.ended != list(range(N))  # the documented non-promise, observed


async def test_a_retry_keeps_its_place_with_concurrency_one(host: Callable[..., Any]) -> None:
    agent = Recorder(fail_once={3, 10})
    rt = await host(agent, concurrency=1)
    await publish_all(rt)
    await all_ended(agent)
    # The retry runs in the failed event's slot, after its backoff: nothing overtakes it.
    assert agent.ended == list(range(N))
    assert agent.started[:5] == [0, 1, 2, 3, 3]


async def test_with_concurrency_a_retry_is_overtaken(host: Callable[..., Any]) -> None:
    agent = Recorder(fail_once={3})
    rt = await host(agent, concurrency=8)
    await publish_all(rt)
    await all_ended(agent)
    # Others run during its backoff: 3's handling ends after later events'.
    assert agent.ended.index(3) > agent.ended.index(4)


class Watcher(Agent, name="ordering-watcher"):
    """A broadcast subscriber: every replica sees every event."""

    concurrency = 1

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    @handle("ordering.items", mode="broadcast")
    async def on_item(self, item: Item, ctx: Context) -> None:
        self.seen.append(item.n)
        await asyncio.sleep(0)


async def test_every_broadcast_replica_sees_the_topic_in_publish_order(
    backend: str, url_for: str
) -> None:
    shared = MemoryTransport() if backend == "memory" else None
    watchers = [Watcher(), Watcher()]
    runtimes = [
        Runtime(transport=shared, **FAST) if shared else Runtime(url_for, **FAST) for _ in watchers
    ]
    try:
        for rt, w in zip(runtimes, watchers, strict=True):
            rt.add(w)
            await rt.start()
            await rt.ready()
        await publish_all(runtimes[0])

        async def both() -> bool:
            return all(len(w.seen) == N for w in watchers)

        await wait_for(both, timeout=20, message="both replicas saw every event")
    finally:
        for rt in runtimes:
            await rt.aclose()
        if shared is not None:
            await shared.aclose()
    assert [w.seen for w in watchers] == [list(range(N))] * 2
