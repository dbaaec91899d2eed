"""``?wait=N`` covers publishes: a publish that returned is on a replica (events and the
journal records, in the outbox or already copied to the run); without the replica it
raises TransportUnavailable. On a single Redis with a replica and on a LocalCluster."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from agentbus.errors import TransportUnavailable
from agentbus.testing.redis_cluster import LocalCluster
from agentbus.testing.redis_cluster import cli as _cli
from agentbus.testing.redis_server import RedisServer
from agentbus.transports import JournalEntry
from agentbus.transports.redis import RedisStreamsTransport

pytestmark = pytest.mark.redis

TOPICS = [f"t{n}" for n in range(8)]  # spread over several slots (masters on a cluster)


def _pid(port: int) -> int:
    for line in _cli(port, "info", "server").splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":")[1])
    raise AssertionError(f"no process_id from port {port}")


@contextmanager
def paused(ports: list[int]) -> Iterator[None]:
    """SIGSTOP the Redis servers on ``ports`` (they neither read nor acknowledge)."""
    pids = [_pid(p) for p in ports]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


class Replicas:
    """Reads on replicas (READONLY, so a cluster replica answers for its slots)."""

    def __init__(self, ports: list[int]) -> None:
        self.clients = [
            redis.Redis(port=p, single_connection_client=True, socket_timeout=5) for p in ports
        ]
        for c in self.clients:
            try:
                c.execute_command("READONLY")
            except redis.ResponseError:
                pass  # not a cluster node

    def xlen(self, key: str) -> int:
        total = 0
        for c in self.clients:
            try:
                total += int(c.xlen(key))
            except redis.ResponseError:  # MOVED: another master's slot
                pass
        return total

    def close(self) -> None:
        for c in self.clients:
            c.close()


async def _check(url: str, replica_ports: list[int], all_replicas: list[int]) -> None:
    # Generous for the writes that must be acknowledged (a loaded machine's replica can
    # take over 500 ms: CI saw a batch refused so); short where the replicas are paused.
    t = RedisStreamsTransport(url + "wait=1&wait_timeout=5000", prefix="wp:")
    short = RedisStreamsTransport(url + "wait=1&wait_timeout=500", prefix="wp:")
    await t.connect()
    await short.connect()
    replicas = Replicas(replica_ports)
    try:
        assert t._c.wait_replicas == 1
        assert short._c.wait_replicas == 1
        keys = t.keys
        for n in range(30):
            topic = TOPICS[n % len(TOPICS)]
            run = f"r{n % 3}"
            record = JournalEntry(run, {"kind": "published", "n": n})
            await t.publish(topic, b'{"id":"%d"}' % n, records=[record])
            # Acknowledged means on the replica when publish returns: the event, and its
            # record in the topic's outbox or already in the run's journal.
            assert replicas.xlen(keys.topic(topic)) == n // len(TOPICS) + 1
            held = replicas.xlen(keys.outbox(topic)) + replicas.xlen(keys.journal(run))
            assert held >= 1
        journals = sum(replicas.xlen(keys.journal(f"r{i}")) for i in range(3))
        outboxes = sum(replicas.xlen(keys.outbox(tp)) for tp in TOPICS)
        assert journals + outboxes >= 30

        # A batch of many publishes at once (the group commit: several slots per batch).
        await asyncio.gather(
            *(t.publish(TOPICS[i % len(TOPICS)], b"{}", records=[]) for i in range(40))
        )
        assert sum(replicas.xlen(keys.topic(tp)) for tp in TOPICS) == 70

        with paused(all_replicas):
            started = time.monotonic()
            with pytest.raises(TransportUnavailable, match="acknowledged by 0 of 1"):
                await short.publish(
                    TOPICS[0], b"{}", records=[JournalEntry("r0", {"kind": "published"})]
                )
            assert time.monotonic() - started < 3
            # A run write and the journal's direct writes wait too.
            with pytest.raises(TransportUnavailable):
                await short.store.write_journal([JournalEntry("r0", {"kind": "note"})])
    finally:
        replicas.close()
        await t.admin.delete_prefix()
        await short.aclose()
        await t.aclose()


def _synced(replica: int) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if "master_link_status:up" in _cli(replica, "info", "replication"):
            return True
        time.sleep(0.05)
    return False


async def test_publishes_wait_for_the_replica_on_one_redis() -> None:
    with (
        RedisServer() as primary,
        RedisServer(config=[f"replicaof 127.0.0.1 {primary.port}"]) as replica,
    ):
        assert _synced(replica.port)
        await _check(primary.url + "?", [replica.port], [replica.port])


@pytest.mark.slow
async def test_publishes_wait_for_the_replicas_on_a_cluster() -> None:
    with LocalCluster(masters=3, replicas=1, timeout=30) as c:
        ports = c.replica_ports()
        assert len(ports) == 3
        await _check(c.url + "?", ports, ports)
