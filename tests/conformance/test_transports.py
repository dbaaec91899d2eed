"""The transport contract (:mod:`agentbus.testing.conformance`) over every transport.

The memory transport runs on a fake clock moved by hand; Redis waits in real time and
uses its own key prefix per check (deleted afterwards). Redis runs three ways here: the shared
single server and a Sentinel-managed primary (``redis+sentinel://``); the same kit on a
throwaway 3-master cluster is in ``test_cluster_transport.py``. Same transport code and keys.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from agentbus import FakeClock, MemoryTransport
from agentbus.testing import unique_prefix
from agentbus.testing.conformance import TransportConformance
from agentbus.testing.redis_cluster import SentinelGroup
from agentbus.transports import Transport


def require_binaries() -> None:
    """redis-server and redis-cli build the cluster and the Sentinel group (CI has both)."""
    if shutil.which("redis-server") and shutil.which("redis-cli"):
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("redis-server and redis-cli are required under CI=true")
    pytest.skip("redis-server/redis-cli not installed")


class TestMemoryTransport(TransportConformance):
    clock: FakeClock

    async def make_transport(self) -> Transport:
        self.clock = FakeClock()
        return MemoryTransport(clock=self.clock)

    async def age(self, transport: Transport, seconds: float) -> None:
        self.clock.advance(seconds)


class TestRedisTransport(TransportConformance):
    pytestmark = [pytest.mark.asyncio, pytest.mark.redis]
    url: str
    prefix: str | None = None

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str) -> None:  # skips (fails under CI) without a Redis
        self.url = redis_url

    async def make_transport(self) -> Transport:
        from agentbus.transports.redis import RedisStreamsTransport

        if self.prefix is None:
            self.prefix = unique_prefix()
        return RedisStreamsTransport(self.url, prefix=self.prefix)


@pytest.fixture(scope="session")
def sentinel_group() -> Iterator[SentinelGroup]:
    """A Sentinel-managed primary with one replica and three Sentinels."""
    require_binaries()
    with SentinelGroup(replicas=1, sentinels=3) as group:
        yield group


class TestRedisSentinelTransport(TestRedisTransport):
    """The same contract on a Sentinel-managed primary (redis+sentinel://)."""

    pytestmark = [pytest.mark.asyncio, pytest.mark.redis]

    @pytest.fixture(autouse=True)
    def _redis(self, sentinel_group: SentinelGroup) -> None:
        self.url = sentinel_group.url
