"""The transport contract on a real Redis Cluster (3 masters, started for this module),
through a ``redis+cluster://`` URL: the same transport code as on a single Redis."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from agentbus.testing import unique_prefix
from agentbus.testing.conformance import TransportConformance
from agentbus.transports import Transport

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    from agentbus.testing.redis_cluster import LocalCluster

    with LocalCluster(masters=3, replicas=0) as cluster:
        yield cluster.url


async def _cluster_transport(url: str, prefix: str) -> Transport:
    from agentbus.transports.redis import RedisStreamsTransport

    return RedisStreamsTransport(url, prefix=prefix)


class TestClusterTransport(TransportConformance):
    pytestmark = [pytest.mark.asyncio]
    url: str
    prefix: str | None = None

    @pytest.fixture(autouse=True)
    def _cluster(self, cluster_url: str) -> None:
        self.url = cluster_url

    async def make_transport(self) -> Transport:
        if self.prefix is None:
            self.prefix = unique_prefix()
        return await _cluster_transport(self.url, self.prefix)


async def test_the_repair_finds_outbox_entries_on_every_master(cluster_url: str) -> None:
    from agentbus.transports import JournalEntry
    from agentbus.transports.redis import RedisStreamsTransport

    t = await _cluster_transport(cluster_url, unique_prefix())
    assert isinstance(t, RedisStreamsTransport)
    await t.connect()
    try:
        topics = [f"spread.{n}" for n in range(12)]  # their slots span the 3 masters
        for n, topic in enumerate(topics):  # what writers killed before the relay leave
            entry = t.store.outbox(topic, [JournalEntry(f"run-{n % 2}", {"kind": "note", "n": n})])
            assert entry is not None
            await t._r.xadd(entry.key, entry.fields())
        nodes = {t._r.get_node_from_key(t.keys.outbox(topic)).name for topic in topics}
        assert len(nodes) == 3

        assert await t.store.relay_pending(older_than=0.0) == len(topics)

        got = [r.record["n"] for run in ("run-0", "run-1") for r in await t.store.read_journal(run)]
        assert sorted(got) == list(range(12))
        for topic in topics:
            assert await t._r.xlen(t.keys.outbox(topic)) == 0
    finally:
        await t.admin.delete_prefix()
        await t.aclose()
