"""The Redis client through Sentinel: it finds the primary and follows a failover."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from agentbus.errors import TransportUnavailable
from agentbus.testing.redis_cluster import SentinelGroup
from agentbus.testing.redis_cluster import cli as _cli
from agentbus.transports.redis_client import RedisClient

pytestmark = pytest.mark.redis


def cli(port: int, *args: str) -> str:
    return _cli(port, *args).strip()


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    with SentinelGroup() as g:
        yield g


async def test_connects_through_sentinel_and_follows_a_failover(group: SentinelGroup) -> None:
    c = RedisClient(group.url + "?prefix=sc:", prefix=None, connect_timeout=10, socket_timeout=5)
    await c.connect()
    key = "sc:{fo}:stream"
    try:
        assert (c.kind, c.cluster) == ("sentinel", False)
        await c.run_in_slot(key, lambda p: p.xadd(key, {"e": b"1"}), transaction=True)
        old = group.master_port
        assert cli(old, "xlen", key) == "1"  # written on the primary Sentinel named

        # SENTINEL FAILOVER by hand: group.failover() waits for the old primary's demotion,
        # and the window before it is what this test is about.
        assert cli(group.sentinel_ports[0], "sentinel", "failover", group.service) == "OK"
        deadline = time.monotonic() + 30
        while group.master_port == old:
            assert time.monotonic() < deadline, "no failover"
            await asyncio.sleep(0.05)
        new = group.master_port
        # Writes land on the new primary within a bounded time, without a restart;
        # meanwhile only retryable errors. (The demoted primary keeps taking writes for
        # a while; the client stops sending it any about a second after the switch.)
        started = time.monotonic()
        written = 1
        while int(cli(new, "xlen", key) or 0) <= 1:
            assert time.monotonic() - started < 10, "did not follow the failover"
            try:
                await c.call(
                    lambda: c.run_in_slot(key, lambda p: p.xadd(key, {"e": b"2"}), transaction=True)
                )
                written += 1
            except TransportUnavailable:
                pass
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
        assert took < 3, f"writes went to the demoted primary for {took:.1f}s"
        # Both clients (commands and blocking reads) now talk to the new primary.
        for _ in range(3):
            await c.call(
                lambda: c.run_in_slot(key, lambda p: p.xadd(key, {"e": b"3"}), transaction=True)
            )
        n = int(cli(new, "xlen", key))
        assert await c.call(lambda: c.r.xlen(key)) == n
        assert await c.call(lambda: c.blocking.xlen(key)) == n
        assert "role:master" in cli(new, "info", "replication")
    finally:
        await c.aclose()


async def test_sentinel_password_and_bad_service(group: SentinelGroup) -> None:
    hosts = ",".join(f"127.0.0.1:{p}" for p in group.sentinel_ports)
    c = RedisClient(
        f"redis+sentinel://{hosts}/nosuchservice", prefix="sc:", connect_timeout=1, socket_timeout=2
    )
    try:
        with pytest.raises(TransportUnavailable, match="Sentinel found no primary"):
            await c.connect()
    finally:
        await c.aclose()
