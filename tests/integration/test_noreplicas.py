"""A write refused for want of replicas (NOREPLICAS) is an outage, not a handler failure.

Measured before the fix (research section 3, roattempts): a handler that published while
``min-replicas-to-write 1`` refused writes used attempts 1, 2, 3 within 2.6 s and was
dead-lettered, because NOREPLICAS came out as a plain TransportError.
"""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from agentbus import Agent, Context, Message, Runtime, handle
from agentbus.testing import wait_for
from agentbus.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis


class Ping(Message, type="nr.Ping"):
    n: int


attempts: list[int] = []
gate = asyncio.Event()


class Relay(Agent, name="nr-relay"):
    @handle("nr.in")
    async def relay(self, ping: Ping, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        await gate.wait()
        await ctx.publish("nr.out", Ping(n=ping.n))


def _config(port: int, value: str) -> None:
    subprocess.run(
        ["redis-cli", "-p", str(port), "config", "set", "min-replicas-to-write", value],
        check=True,
        capture_output=True,
    )


async def test_a_handler_waits_out_noreplicas_without_using_attempts() -> None:
    attempts.clear()
    gate.clear()
    with RedisServer(config=["min-replicas-max-lag 10"]) as server:
        async with Runtime(server.url + "?prefix=nr:", max_attempts=3) as rt:
            rt.add(Relay())
            await rt.ready()
            await rt.publish("nr.in", Ping(n=1))
            await wait_for(lambda: attempts == [1], timeout=5)
            _config(server.port, "1")  # no replica: every write is refused
            gate.set()
            await asyncio.sleep(3)  # longer than the measured 2.6 s to dead-letter
            _config(server.port, "0")
            transport = rt.transport
            out: list[object] = []
            for _ in range(100):
                out = list(await transport.read_tail("nr.out", "0-0", count=10, block_ms=None))
                if out:
                    break
                await asyncio.sleep(0.1)
            assert len(out) == 1
            assert set(attempts) == {1}, attempts  # outage retries keep attempt 1
            assert len(attempts) >= 2  # the handler ran again once writes were taken
            assert await transport.admin.dead_letters("nr.in", count=10) == []
