"""Private Redis deployments for the cluster scenario: one master or a Redis Cluster.

A :class:`Target` gives what the scenario needs of either: its URL, a check client
(cluster-aware on a cluster), each master's CPU time and command counts (``INFO``
through ``redis-cli``, outside the timed windows), and a cleanup that works per node.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from agentbus.testing.redis_cluster import LocalCluster, info
from agentbus.testing.redis_server import RedisServer

from ._harness import BenchError, with_prefix

#: Replication settings of the private servers (as LocalCluster's nodes: sync at once).
NODE_CONFIG = ("repl-diskless-sync-delay 0",)


@dataclass
class Target:
    """A private deployment the scenario writes to: URLs, a check client, CPU, cleanup."""

    name: str
    base_url: str
    masters: list[int]
    cluster: bool
    replicas: dict[int, list[int]] = field(default_factory=dict)

    def url_for(self, prefix: str, query: str = "") -> str:
        url = with_prefix(self.base_url, prefix)
        return f"{url}&{query}" if query else url

    async def client(self) -> Any:
        """A redis-py client for checks (cluster-aware on a cluster), bytes in and out."""
        if self.cluster:
            rc = RedisCluster(host="127.0.0.1", port=self.masters[0], decode_responses=False)
            await rc.initialize()
            return rc
        return aioredis.Redis(host="127.0.0.1", port=self.masters[0], decode_responses=False)

    def master_cpu(self) -> dict[int, float]:
        """CPU seconds (user + sys) each master has used so far."""
        out = {}
        for port in self.masters:
            cpu = info(port, "cpu")
            out[port] = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        return out

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix`` on every master, one key per UNLINK (keys of
        different slots cannot share a command on a cluster node)."""
        for port in self.masters:
            r = aioredis.Redis(host="127.0.0.1", port=port, decode_responses=False)
            try:
                keys = [k async for k in r.scan_iter(match=prefix + "*", count=1000)]
                for start in range(0, len(keys), 500):
                    async with r.pipeline(transaction=False) as pipe:
                        for key in keys[start : start + 500]:
                            pipe.unlink(key)
                        await pipe.execute()
            finally:
                await r.aclose()


def single_target(server: RedisServer, replica: RedisServer | None = None) -> Target:
    reps = {server.port: [replica.port]} if replica is not None else {}
    return Target("1 master", server.url, [server.port], False, reps)


def cluster_target(cluster: LocalCluster) -> Target:
    masters = cluster.master_ports()
    reps = {m: cluster.replica_of(m) for m in masters}
    return Target(f"{len(masters)}-master cluster", cluster.url, masters, True, reps)


async def topics_by_master(target: Target, per_master: int) -> dict[int, list[str]]:
    """``per_master`` topic names whose streams live on each master (by hash slot)."""
    rc = await target.client()
    try:
        chosen: dict[int, list[str]] = {m: [] for m in target.masters}
        for i in range(10_000):
            name = f"bench.cluster.{i}"
            # The stream key's hash tag is the topic name: its slot does not depend on the
            # prefix, so the same names spread the same way in every round.
            port = int(rc.get_node_from_key("{" + name + "}").port)
            if len(chosen[port]) < per_master:
                chosen[port].append(name)
            if all(len(v) == per_master for v in chosen.values()):
                return chosen
    finally:
        await rc.aclose()
    raise BenchError(f"could not find {per_master} topics per master")


def replica_link_up(port: int) -> bool:
    return info(port, "replication").get("master_link_status") == "up"


async def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


def command_calls(ports: list[int]) -> Counter[str]:
    calls: Counter[str] = Counter()
    for port in ports:
        for key, value in info(port, "commandstats").items():
            # cmdstat_xadd:calls=12,usec=34,...
            calls[key.removeprefix("cmdstat_")] += int(value.split(",")[0].split("=")[1])
    return calls


async def idle_cpu(target: Target, seconds: float = 2.0) -> dict[int, float]:
    """CPU seconds per second each master uses while no client talks to it (cron, and
    on a cluster the cluster bus): subtracted from the rounds' figures."""
    before = target.master_cpu()
    await asyncio.sleep(seconds)
    after = target.master_cpu()
    return {p: (after[p] - before[p]) / seconds for p in target.masters}
