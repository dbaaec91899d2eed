"""A subscription over topics on every master of a real Redis Cluster drains at once.

Regression test for a stall: a multi-slot subscription reads each slot with its own
blocking ``XREADGROUP`` on the cluster client. redis-py's cluster client sent the first
of those (issued before it had read the topology) to a random primary; every fifth
MOVED made it close all its connections, the blocking reads of the other slots included,
and a read caught reconnecting waited for the 30 s socket timeout while its slot's
events sat unread. Each round starts a fresh runtime (fresh clients), the moment the bug
showed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from agentbus import Agent, Context, Message, Runtime
from agentbus.testing import unique_prefix
from agentbus.testing.redis_cluster import LocalCluster, cli

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
        reason="needs the redis-server and redis-cli commands",
    ),
    pytest.mark.timeout(180),
]

EVENTS = 3000
ROUNDS = 3
#: Well below the blocking client's 30 s socket timeout (what a stalled read waited).
DRAIN_S = 15.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(masters=3, replicas=0, timeout=30)
    try:
        yield c.start()
    finally:
        c.stop()


class Tick(Message, type="test.cluster_reads.Tick"):
    seq: int


class Sink(Agent, name="cluster-reads-sink"):
    def __init__(self, topics: list[str], expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.seen: set[int] = set()
        self.done = asyncio.Event()
        for topic in topics:
            self.bind(topic, self.on_tick)

    async def on_tick(self, msg: Tick, ctx: Context) -> None:
        self.seen.add(msg.seq)
        if len(self.seen) >= self.expected:
            self.done.set()


async def topics_on_every_master(cluster: LocalCluster, per_master: int) -> list[str]:
    """``per_master`` topic names whose streams live on each master (by hash tag)."""
    r = RedisCluster(host="127.0.0.1", port=cluster.master_ports()[0])
    await r.initialize()
    try:
        chosen: dict[str, list[str]] = {}
        for i in range(10_000):
            name = f"reads.{i}"
            node = r.get_node_from_key("{" + name + "}")
            assert node is not None
            if len(chosen.setdefault(node.name, [])) < per_master:
                chosen[node.name].append(name)
            if len(chosen) == 3 and all(len(v) == per_master for v in chosen.values()):
                return [t for names in chosen.values() for t in names]
    finally:
        await r.aclose()
    raise AssertionError("no topic names spread over the masters")


def moved_replies(cluster: LocalCluster) -> int:
    """MOVED errors the masters replied since their stats were reset."""
    total = 0
    for port in cluster.master_ports():
        for line in cli(port, "info", "errorstats").splitlines():
            if line.startswith("errorstat_MOVED:"):
                total += int(line.split("count=")[1].split(",")[0])
    return total


async def test_multi_slot_subscription_drains_without_stall(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    topics = await topics_on_every_master(cluster, per_master=2)
    for port in cluster.master_ports():
        cli(port, "config", "resetstat")
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    caplog.set_level(logging.WARNING)
    try:
        for _ in range(ROUNDS):
            prefix = unique_prefix()
            sink = Sink(topics, EVENTS)
            rt = Runtime(cluster.url_for(prefix))
            rt.add(sink)
            async with rt, rt.run("drain") as run:
                await asyncio.gather(
                    *(
                        run.publish(topics[seq % len(topics)], Tick(seq=seq))
                        for seq in range(EVENTS)
                    )
                )
                started = time.monotonic()
                await asyncio.wait_for(sink.done.wait(), DRAIN_S)
                assert time.monotonic() - started < DRAIN_S
            assert sink.seen == set(range(EVENTS))
        gc.collect()  # a task whose exception was never retrieved reports it when freed
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [c.get("message") for c in unhandled] == []
    # No read had to be retried (the stall began with failed reads) ...
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert failed == []
    # ... and every blocking read went straight to its slot's primary.
    assert moved_replies(cluster) == 0
