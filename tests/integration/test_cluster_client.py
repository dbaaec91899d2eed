"""The Redis client on a real local Redis Cluster (3 primaries, 3 replicas)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agentbus.errors import TransportError, TransportUnavailable
from agentbus.testing.redis_cluster import LocalCluster
from agentbus.testing.redis_cluster import cli as _cli
from agentbus.transports.redis_client import RedisClient

pytestmark = pytest.mark.redis


def cli(port: int, *args: str) -> str:
    return _cli(port, *args).strip()


def replica_cli(port: int, *args: str) -> str:
    """``args`` run on a cluster replica (after READONLY, on the same connection)."""
    done = subprocess.run(
        ["redis-cli", "-p", str(port)],
        input=f"READONLY\n{' '.join(args)}\n",
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout.strip().splitlines()[-1]


def master_of(cluster: LocalCluster, key: str) -> int:
    """The port of the primary that serves ``key``'s slot."""
    port = cluster.master_ports()[0]
    slot = int(cli(port, "cluster", "keyslot", key))
    for line in cli(port, "cluster", "nodes").splitlines():
        fields = line.split()
        if "master" in fields[2]:
            for part in fields[8:]:
                lo, _, hi = part.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
    raise AssertionError(f"no primary serves slot {slot}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(masters=3, replicas=1) as c:
        yield c


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[RedisClient]:
    c = RedisClient(cluster.url, prefix="cc:", connect_timeout=10, socket_timeout=5)
    await c.connect()
    yield c
    await c.aclose()


def _slots_apart(cluster: LocalCluster) -> tuple[str, str]:
    """Two hash tags whose slots live on different primaries."""
    first = "{t0}"
    for n in range(1, 200):
        tag = f"{{t{n}}}"
        if master_of(cluster, tag) != master_of(cluster, first):
            return first, tag
    raise AssertionError("all tags on one primary")


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
async def test_connects_from_any_seed_node(cluster: LocalCluster, seed: int) -> None:
    url = f"redis+cluster://127.0.0.1:{cluster.ports[seed]}/?prefix=cc:"
    c = RedisClient(url, prefix=None, connect_timeout=10, socket_timeout=5)
    try:
        await c.connect()
        assert (c.kind, c.cluster, c.wait_replicas) == ("cluster", True, 0)
        assert c.keys.prefix == "cc:"
        # Keys on every primary are reached through one seed.
        for n in range(20):
            await c.call(lambda n=n: c.r.set(f"cc:seed{seed}:{{k{n}}}", n))
            assert await c.call(lambda n=n: c.r.get(f"cc:seed{seed}:{{k{n}}}")) == str(n).encode()
        assert await c.call(lambda: c.blocking.ping())
    finally:
        await c.aclose()


async def test_single_slot_transaction_and_watch(client: RedisClient) -> None:
    stream, counter = "cc:{tx}:stream", "cc:{tx}:count"

    def build(pipe: Any) -> None:
        pipe.xadd(stream, {"e": b"x"})
        pipe.hincrby(counter, "n", 1)

    replies = await client.run_in_slot(stream, build, transaction=True)
    assert replies[1] == 1
    assert await client.r.xlen(stream) == 1

    # WATCH + MULTI in one slot (the dedupe commit's shape).
    async with client.r.pipeline(transaction=True) as pipe:
        await pipe.watch(counter)
        assert await pipe.hget(counter, "n") == b"1"
        pipe.multi()
        pipe.hincrby(counter, "n", 1)
        pipe.xadd(stream, {"e": b"y"})
        await pipe.execute()
    assert await client.r.hget(counter, "n") == b"2"


async def test_cross_slot_atomic_call_names_its_keys(
    client: RedisClient, cluster: LocalCluster
) -> None:
    a, b = _slots_apart(cluster)

    def build(pipe: Any) -> None:
        pipe.set(f"cc:{a}:x", 1)
        pipe.set(f"cc:{b}:y", 1)

    with pytest.raises(TransportError) as info:
        await client.call(lambda: client.run_in_slot(f"cc:{a}:x", build, transaction=True))
    assert not isinstance(info.value, TransportUnavailable)
    assert "different hash slots" in str(info.value)
    assert f"cc:{a}:x" in str(info.value)
    assert f"cc:{b}:y" in str(info.value)


async def test_scripts_load_on_every_primary_and_scan_covers_all(
    client: RedisClient, cluster: LocalCluster
) -> None:
    a, b = _slots_apart(cluster)
    cli(cluster.master_ports()[0], "script", "flush")  # NOSCRIPT somewhere: reloaded on demand
    script = client.r.register_script("redis.call('SET', KEYS[1], ARGV[1]); return ARGV[1]")
    for tag in (a, b):
        assert await script(keys=[f"cc:scan:{tag}"], args=["v"]) == b"v"
    found = {k async for k in client.r.scan_iter(match="cc:scan:*")}
    assert found == {f"cc:scan:{a}".encode(), f"cc:scan:{b}".encode()}


async def test_run_in_slot_waits_for_the_replica(cluster: LocalCluster) -> None:
    c = RedisClient(
        cluster.url + "?wait=1&wait_timeout=2000",
        prefix="cc:",
        connect_timeout=10,
        socket_timeout=5,
    )
    await c.connect()
    try:
        assert c.wait_replicas == 1
        for n in range(5):
            key = f"cc:{{w{n}}}:stream"
            await c.run_in_slot(key, lambda p, key=key: p.xadd(key, {"e": b"1"}), transaction=True)
            master = master_of(cluster, key)
            replica = cluster.replica_of(master)[0]
            # Acknowledged by the replica: it has the entry right after the call returned.
            assert replica_cli(replica, "xlen", key) == "1"
        # The replica frozen: the write is refused as unreplicated after the timeout.
        server = cluster.nodes[replica]
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(TransportUnavailable, match="acknowledged by 0 of 1"):
                await c.run_in_slot(key, lambda p: p.xadd(key, {"e": b"2"}), transaction=True)
            assert 1.9 < time.monotonic() - started < 4
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
    finally:
        await c.aclose()


async def test_a_node_url_without_the_cluster_scheme_gets_moved(cluster: LocalCluster) -> None:
    c = RedisClient(
        f"redis://127.0.0.1:{cluster.master_ports()[0]}/0",
        prefix="cc:",
        connect_timeout=5,
        socket_timeout=5,
    )
    # A key on another node: its slot is served elsewhere.
    key = next(
        f"cc:{{m{n}}}"
        for n in range(100)
        if master_of(cluster, f"{{m{n}}}") != cluster.master_ports()[0]
    )
    try:
        with pytest.raises(TransportUnavailable) as info:
            await c.call(lambda: c.r.set(key, 1))
        assert "redis+cluster://" in str(info.value)
        assert "another node" in str(info.value)
    finally:
        await c.aclose()


async def test_follows_a_cluster_failover(cluster: LocalCluster) -> None:
    c = RedisClient(cluster.url, prefix="cc:", connect_timeout=10, socket_timeout=5)
    await c.connect()
    key = "cc:{fo}:stream"
    try:
        await c.run_in_slot(key, lambda p: p.xadd(key, {"e": b"1"}), transaction=True)
        master = master_of(cluster, key)
        replica = cluster.replica_of(master)[0]
        cli(replica, "cluster", "failover")
        deadline = time.monotonic() + 20
        while master_of(cluster, key) != replica:
            assert time.monotonic() < deadline, "no failover"
            await asyncio.sleep(0.1)
        # The first write may meet the demoted primary (MOVED, retried once inside) or a
        # stale connection: retryable errors only, then it works without a restart.
        deadline = time.monotonic() + 15
        while True:
            try:
                await c.call(
                    lambda: c.run_in_slot(key, lambda p: p.xadd(key, {"e": b"2"}), transaction=True)
                )
                break
            except TransportUnavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        assert await c.call(lambda: c.r.xlen(key)) == 2
    finally:
        await c.aclose()
