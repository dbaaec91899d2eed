"""The hostile-input property test (tests/unit/test_hostile_input.py) on real Redis.

Raw entries go through ``XADD`` and back through ``XREADGROUP``, so what Redis does to
odd field names, binary values and large entries is part of what is checked.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentbus import Runtime
from agentbus.testing import unique_prefix
from agentbus.testing.raw_entries import add_raw
from agentbus.testing.redis_server import RedisServer

pytestmark = [pytest.mark.redis]

_path = Path(__file__).resolve().parents[1] / "unit" / "test_hostile_input.py"
_spec = importlib.util.spec_from_file_location("hostile_input_cases", _path)
assert _spec is not None
assert _spec.loader is not None
cases_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cases_module  # dataclasses look their module up there
_spec.loader.exec_module(cases_module)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(directory=tmp_path_factory.mktemp("redis")) as s:
        yield s


async def _redis_add_raw(rt: Runtime, topic: str, fields: dict[str, bytes]) -> str:
    return await add_raw(rt.transport, topic, fields)


def test_hostile_entries_on_redis(server: RedisServer) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(cases_module.hostile_cases, min_size=1, max_size=8))
    def check(cases: list[object]) -> None:
        url = f"{server.url}?prefix={unique_prefix('hostile')}"

        def make() -> Runtime:
            return Runtime(url, max_event_bytes=cases_module.MAX_BYTES, block_ms=50)

        asyncio.run(cases_module.run_scenario(cases, make, _redis_add_raw))

    check()
