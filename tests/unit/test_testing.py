"""The helpers in ``agentbus.testing`` and the fake clock."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentbus import FakeClock, SystemClock
from agentbus.testing import redis_url_available, unique_prefix, wait_for


async def test_wait_for_returns_once_the_condition_holds() -> None:
    flag: list[bool] = []
    asyncio.get_running_loop().call_later(0.05, flag.append, True)
    begun = time.monotonic()

    await wait_for(lambda: bool(flag), timeout=5)

    assert flag == [True]
    assert time.monotonic() - begun < 2


async def test_wait_for_accepts_async_conditions() -> None:
    calls = 0

    async def third_time_lucky() -> bool:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return calls >= 3

    await wait_for(third_time_lucky, timeout=5, interval=0.001)

    assert calls == 3


async def test_wait_for_times_out_naming_the_condition() -> None:
    calls = 0

    def never() -> bool:
        nonlocal calls
        calls += 1
        return False

    begun = time.monotonic()
    with pytest.raises(TimeoutError, match=r"the moon turning blue not met within 0\.1s"):
        await wait_for(never, timeout=0.1, interval=0.01, message="the moon turning blue")

    assert 0.1 <= time.monotonic() - begun < 2
    assert calls >= 2


async def test_wait_for_checks_at_least_once() -> None:
    await wait_for(lambda: True, timeout=0)
    with pytest.raises(TimeoutError):
        await wait_for(lambda: False, timeout=0)


def test_redis_url_available_for_a_closed_port() -> None:
    assert redis_url_available("redis://127.0.0.1:1/0", timeout=0.2) is False


def test_unique_prefix() -> None:
    prefixes = {unique_prefix() for _ in range(100)}
    assert len(prefixes) == 100
    assert all(p.startswith("test:") and p.endswith(":") for p in prefixes)
    assert unique_prefix("bench").startswith("bench:")


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start_ms=1_000)
    assert clock.now_ms() == 1_000
    clock.advance(1.5)
    assert clock.now_ms() == 2_500
    assert abs(SystemClock().now_ms() - time.time() * 1000) < 1000
