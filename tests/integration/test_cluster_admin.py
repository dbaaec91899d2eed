"""The run index, the operator commands and presence on a real Redis Cluster.

Keys of topics, runs, the run index and presence spread over the three masters of a
:class:`~agentbus.testing.redis_cluster.LocalCluster`; ``agentbus runs``, ``topics``,
``dlq list``, ``prune`` and ``runs prune`` must see all of them, and nothing they send
may span two hash slots (the cluster refuses that with CROSSSLOT).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from agentbus.testing import unique_prefix
from agentbus.testing.redis_cluster import LocalCluster
from agentbus.testing.workers import run_cli
from agentbus.transports import RunInfo
from agentbus.transports.redis import RedisStreamsTransport

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
        reason="needs the redis-server and redis-cli commands",
    ),
    pytest.mark.timeout(120),
]

TOPICS = [f"adm.t{n}" for n in range(12)]
RUNS = [f"run-{n:02d}" for n in range(30)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(masters=3, replicas=0, timeout=30)
    try:
        yield c.start()
    finally:
        c.stop()


@pytest.fixture
async def raw(cluster: LocalCluster) -> AsyncIterator[Any]:
    """redis-py's own cluster client, for setting state up and looking at it."""
    port = cluster.master_ports()[0]
    r = RedisCluster(host="127.0.0.1", port=port)
    try:
        yield r
    finally:
        await r.aclose()


@pytest.fixture
async def t(cluster: LocalCluster) -> AsyncIterator[RedisStreamsTransport]:
    transport = RedisStreamsTransport(cluster.url_for(unique_prefix()))
    await transport.connect()
    try:
        yield transport
    finally:
        await transport.admin.delete_prefix()
        await transport.aclose()


def cli(*args: str, url: str) -> Any:
    done = run_cli(*args, "--url", url, env={"AGENTBUS_URL": ""})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def masters_of(raw: Any, keys: list[str]) -> set[str]:
    return {raw.get_node_from_key(k).name for k in keys}


async def test_the_operator_commands_see_every_master(
    t: RedisStreamsTransport, raw: Any, cluster: LocalCluster
) -> None:
    k = t.keys
    url = cluster.url_for(k.prefix)
    for n, topic in enumerate(TOPICS):
        await raw.xadd(k.topic(topic), {"e": b"{}"})
        await raw.xgroup_create(k.topic(topic), "g", id="0")
        letter = {"origin_id": "1-1", "reason": "failed", "agent": "a", "attempts": n}
        await raw.xadd(k.dead_letters(topic), {"letter": json.dumps(letter)})
    for n, run_id in enumerate(RUNS):
        await t.store.save_run(RunInfo(run_id, "r", "completed", 1000.0 + n, 1000.5 + n))
        await raw.xadd(k.journal(run_id), {"c": b'[{"kind":"step"}]'}, id=f"{1_000_000 + n}-1")
        await raw.hincrby(k.run(run_id), "records", 1)
    await raw.xgroup_create(k.topic(TOPICS[0]), "listener:dead", id="$")
    await raw.xadd(k.topic("_inbox.dead"), {"e": b"{}"})
    await t.admin.announce(
        "dead", groups=[(TOPICS[0], "listener:dead")], inbox="_inbox.dead", every_ms=1
    )
    assert len(masters_of(raw, [k.topic(x) for x in TOPICS])) == 3
    assert len(masters_of(raw, [k.run(x) for x in RUNS])) == 3
    assert len(masters_of(raw, [k.runs(b) for b in range(16)])) == 3

    topics = cli("topics", "--json", url=url)
    assert [x["topic"] for x in topics] == sorted(["_inbox.dead", *TOPICS])
    assert all(x["dead_letters"] == 1 for x in topics if x["topic"] != "_inbox.dead")

    runs = cli("runs", "--json", "--limit", "100", url=url)
    assert [r["run_id"] for r in runs] == RUNS[::-1]
    assert all(r["records"] == 1 for r in runs)
    assert [r["run_id"] for r in cli("runs", "--json", "--limit", "4", url=url)] == RUNS[:-5:-1]

    for n, topic in enumerate(TOPICS):
        (letter,) = cli("dlq", "list", topic, "--json", url=url)
        assert (letter["topic"], letter["attempts"]) == (topic, n)

    listed = cli("prune", "--older-than", "1h", "--dry-run", "--json", url=url)
    assert listed["dead"] == []
    await asyncio.sleep(1.1)
    listed = cli("prune", "--older-than", "1s", "--json", url=url)
    assert [d["consumer"] for d in listed["dead"]] == ["dead"]
    assert [g["name"] for g in await raw.xinfo_groups(k.topic(TOPICS[0]))] == [b"g"]
    assert not await raw.exists(k.topic("_inbox.dead"))
    assert "_inbox.dead" not in [x["topic"] for x in cli("topics", "--json", url=url)]

    pruned = cli("runs", "prune", "--older-than", "1s", "--json", url=url)
    assert sorted(pruned["pruned"]) == RUNS
    assert cli("runs", "--json", url=url) == []

    assert await t.admin.delete_prefix() == 2 * len(TOPICS)  # the topics and dead letters
    assert await t.admin.topics() == []
