"""The transport contract (:mod:`agentbus.testing.conformance`) over every transport.

The memory transport runs on a fake clock moved by hand; Redis waits in real time and
uses its own key prefix per check (deleted afterwards).
"""

from __future__ import annotations

import pytest

from agentbus import FakeClock, MemoryTransport
from agentbus.testing import unique_prefix
from agentbus.testing.conformance import TransportConformance
from agentbus.transports import Transport


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
