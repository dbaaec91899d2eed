"""Partitioned topics: per-key order across replicas, on memory and on Redis.

Replicas here are runtimes of their own (each its own consumer, and on Redis its own
connections, as separate processes would be) sharing one agent's consumer group.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from agentbus import (
    Agent,
    Context,
    MemoryTransport,
    Message,
    Runtime,
    UsageError,
    handle,
    open_transport,
)
from agentbus.testing import wait_for
from agentbus.testing.redis_cluster import LocalCluster

TOPIC = "part.orders"
KEYS, PER_KEY, PARTITIONS = 50, 20, 8


class Order(Message, type="part.Order"):
    key: str
    seq: int
    delay: float = 0.0


class Keeper(Agent, name="keeper"):
    """Records (key, seq, replica) when it has handled an order, after a random delay."""

    def __init__(self, log: list[tuple[str, int, str]], tag: str) -> None:
        super().__init__()
        self.log = log
        self.tag = tag
        self.running: set[str] = set()

    @handle(TOPIC)
    async def on_order(self, order: Order, ctx: Context) -> None:
        assert order.key not in self.running, f"two of key {order.key} at once"
        self.running.add(order.key)
        try:
            await asyncio.sleep(order.delay)
        finally:
            self.running.discard(order.key)
        self.log.append((order.key, order.seq, self.tag))


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(masters=3, replicas=0, timeout=30) as c:
        yield c


_on_cluster = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-server, redis-cli"),
]


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=_on_cluster),
    ]
)
async def make_runtime(
    request: pytest.FixtureRequest, prefix: str
) -> AsyncIterator[Callable[..., Runtime]]:
    """Runtimes on one store: a shared memory transport (system clock), Redis, or a
    local Redis Cluster (3 masters)."""
    if request.param == "memory":
        shared = MemoryTransport()
        await shared.connect()

        def make(**kw: Any) -> Runtime:
            return Runtime(transport=shared, journal=False, **kw)

        yield make
        await shared.aclose()
        return
    if request.param == "redis":
        url = f"{request.getfixturevalue('redis_url')}?prefix={prefix}"
    else:
        url = request.getfixturevalue("cluster").url_for(prefix)

    def make_redis(**kw: Any) -> Runtime:
        return Runtime(url, journal=False, **kw)

    yield make_redis
    async with open_transport(url) as t:
        await t.admin.delete_prefix()


def reading(rt: Runtime) -> set[str]:
    """The partitions a replica reads now (white box: its subscription's owner)."""
    return {s for sub in rt._hosted.subs for o in sub._owners.values() for s in o.readable}


async def settled(replicas: list[Runtime]) -> None:
    """Wait until the replicas read every partition between them, each a share."""

    def done() -> bool:
        shares = [reading(rt) for rt in replicas]
        return all(shares) and sum(len(s) for s in shares) == PARTITIONS

    await wait_for(done, timeout=10, message="partitions shared out")


def check_order(log: list[tuple[str, int, str]], keys: int, per_key: int) -> None:
    by_key: dict[str, list[int]] = {}
    for key, seq, _ in log:
        by_key.setdefault(key, []).append(seq)
    assert len(by_key) == keys
    for key, seqs in by_key.items():
        assert seqs == list(range(per_key)), f"key {key} handled as {seqs}"


async def test_same_key_events_are_handled_in_publish_order_by_several_replicas(
    make_runtime: Callable[..., Runtime], request: pytest.FixtureRequest, prefix: str
) -> None:
    rng = random.Random(15)
    log: list[tuple[str, int, str]] = []
    parts = {TOPIC: PARTITIONS}
    replicas = [
        make_runtime(consumer=f"r{i}", partitions=parts, partition_lease=1.0) for i in range(3)
    ]
    publisher = make_runtime(consumer="pub")  # did not declare: looks the count up
    for i, rt in enumerate(replicas):
        rt.add(Keeper(log, f"r{i}"))
    await replicas[0].start()
    await replicas[1].start()
    await publisher.start()
    await settled(replicas[:2])
    try:
        # Keys interleaved; each key's orders in sequence. The third replica joins midway
        # (a rebalance while orders flow).
        pending = {f"k{n}": 0 for n in range(KEYS)}
        published = 0
        while pending:
            key = rng.choice(sorted(pending))
            seq = pending[key]
            await publisher.publish(
                TOPIC, Order(key=key, seq=seq, delay=rng.random() * 0.004), key=key
            )
            published += 1
            pending[key] = seq + 1
            if seq + 1 == PER_KEY:
                del pending[key]
            if published == KEYS * PER_KEY // 3:
                await replicas[2].start()
                await settled(replicas)  # orders published meanwhile wait in the streams

        await wait_for(
            lambda: len(log) >= KEYS * PER_KEY, timeout=25, message="every order handled"
        )
        await asyncio.sleep(0.2)  # a duplicate (there must be none) would show up
        check_order(log, KEYS, PER_KEY)
        assert len(log) == KEYS * PER_KEY  # exactly once
        assert {tag for _, _, tag in log} == {"r0", "r1", "r2"}  # all three took a share
        streams = {t.topic for t in await publisher.transport.admin.topics()}
        assert {f"{TOPIC}#{k}" for k in range(PARTITIONS)} <= streams
        if "cluster" in request.fixturenames:  # the partitions spread over every master
            spread = request.getfixturevalue("cluster").keys_per_master(f"{prefix}topic:*")
            assert len(spread) == 3
            assert all(spread.values()), spread
    finally:
        for rt in (*replicas, publisher):
            await rt.aclose()


async def test_a_conflicting_declaration_is_refused(make_runtime: Callable[..., Runtime]) -> None:
    first = make_runtime(partitions={TOPIC: 4})
    second = make_runtime(partitions={TOPIC: 6})
    await first.start()
    try:
        with pytest.raises(UsageError, match="4 in the store"):
            await second.start()
    finally:
        await first.aclose()
        await second.aclose()
