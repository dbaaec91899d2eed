"""``?wait=N``: a write returns once N replicas acknowledged it, else TransportUnavailable."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agentbus.errors import TransportUnavailable
from agentbus.testing.redis_cluster import cli as _cli
from agentbus.testing.redis_server import RedisServer
from agentbus.transports.redis_client import RedisClient

pytestmark = pytest.mark.redis


def cli(port: int, *args: str) -> str:
    return _cli(port, *args).strip()


def _synced(replica: RedisServer) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if "master_link_status:up" in cli(replica.port, "info", "replication"):
            return True
        time.sleep(0.05)
    return False


async def test_writes_wait_for_the_replica_and_fail_without_it() -> None:
    with (
        RedisServer() as primary,
        RedisServer(config=[f"replicaof 127.0.0.1 {primary.port}"]) as replica,
    ):
        assert _synced(replica)
        c = RedisClient(
            primary.url + "?wait=1&wait_timeout=500",
            prefix="w:",
            connect_timeout=5,
            socket_timeout=5,
        )
        await c.connect()
        key = "w:{t}:stream"

        def build(pipe: Any) -> None:
            pipe.xadd(key, {"e": b"x"})
            pipe.hincrby("w:{t}:n", "n", 1)

        try:
            assert (c.kind, c.wait_replicas, c.wait_timeout_ms) == ("redis", 1, 500)
            for n in range(1, 21):
                replies = await c.run_in_slot(key, build, transaction=n % 2 == 0)
                assert replies[1] == n  # the queued commands' replies, not WAIT's
                # Acknowledged means on the replica when the call returns.
                assert cli(replica.port, "xlen", key) == str(n)

            replica.stop()
            started = time.monotonic()
            with pytest.raises(TransportUnavailable, match="acknowledged by 0 of 1 replicas"):
                await c.call(lambda: c.run_in_slot(key, build, transaction=True))
            assert 0.4 < time.monotonic() - started < 3
            # The write itself is on the primary (only unreplicated).
            assert await c.r.xlen(key) == 21
        finally:
            await c.aclose()
