"""Partitions on a real Redis Cluster: the primitives, and partitions spread over masters.

Each partition is a stream of its own hash tag (``{orders#3}``): its stream and its lease
share a slot, and the partitions of one topic land on every master of a
:class:`~agentbus.testing.redis_cluster.LocalCluster`. Every partition call touches one
slot (the cluster refuses anything else with CROSSSLOT).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from agentbus.partitions import partition_stream
from agentbus.testing import unique_prefix
from agentbus.testing.conformance import PartitionChecks
from agentbus.testing.redis_cluster import LocalCluster
from agentbus.transports import Transport
from agentbus.transports.redis import RedisStreamsTransport

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
        reason="needs the redis-server and redis-cli commands",
    ),
    pytest.mark.timeout(120),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(masters=3, replicas=0, timeout=30)
    try:
        yield c.start()
    finally:
        c.stop()


class TestClusterPartitions(PartitionChecks):
    url: str
    prefix: str | None = None

    @pytest.fixture(autouse=True)
    def _cluster(self, cluster: LocalCluster) -> None:
        self.url = cluster.url

    async def make_transport(self) -> Transport:
        if self.prefix is None:
            self.prefix = unique_prefix()
        return RedisStreamsTransport(self.url, prefix=self.prefix)


@pytest.fixture
async def t(cluster: LocalCluster) -> AsyncIterator[RedisStreamsTransport]:
    transport = RedisStreamsTransport(cluster.url_for(unique_prefix()))
    await transport.connect()
    try:
        yield transport
    finally:
        await transport.admin.delete_prefix()
        await transport.aclose()


@pytest.fixture
async def raw(cluster: LocalCluster) -> AsyncIterator[Any]:
    r = RedisCluster(host="127.0.0.1", port=cluster.master_ports()[0])
    await r.initialize()
    try:
        yield r
    finally:
        await r.aclose()


async def test_the_partitions_of_a_topic_spread_over_every_master(
    t: RedisStreamsTransport, raw: Any, cluster: LocalCluster
) -> None:
    streams = [partition_stream("orders", k) for k in range(8)]
    assert await t.declare_partitions("orders", 8) == 8
    for stream in streams:
        await t.create_group(stream, "billing")
    assert await t.acquire_leases("billing", "w1", streams, ttl_ms=10_000) == [True] * 8
    members = await t.heartbeat_member("orders", "billing", "w1", ttl_ms=10_000)
    assert members == ["w1"]

    nodes = {raw.get_node_from_key(t.keys.topic(s)).name for s in streams}
    assert len(nodes) == len(cluster.master_ports()) == 3
    for stream in streams:  # a partition's lease lives with its stream
        assert raw.get_node_from_key(t.keys.lease(stream, "billing")) is raw.get_node_from_key(
            t.keys.topic(stream)
        )
