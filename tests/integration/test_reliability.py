"""Faults survived, nothing lost: worker crashes, Redis restarts, poison, long handlers.

Every test starts its own ``redis-server`` (free loopback port, temp dir) so it can
crash and restart it; workers are real ``agentbus worker`` subprocesses.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentbus import (
    Agent,
    Context,
    Envelope,
    Message,
    Runtime,
    TransportUnavailable,
    handle,
)
from agentbus.testing import wait_for
from agentbus.testing.redis_server import RedisServer, free_port
from agentbus.transports import Transport

pytestmark = [pytest.mark.redis]

APP_FILE = Path(__file__).with_name("reliability_app.py")
APP = f"{APP_FILE}:app"
_spec = importlib.util.spec_from_file_location("reliability_app", APP_FILE)
assert _spec is not None and _spec.loader is not None
rel_app = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rel_app)
Item = rel_app.Item
Handled = rel_app.Handled


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with AOF fsynced on every write."""
    with RedisServer(directory=tmp_path / "redis", appendonly=True, appendfsync="always") as s:
        yield s


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def tmp_redis_dir(tmp_path: Path) -> Path:
    return _mkdir(tmp_path / "redis")


class Workers:
    """`agentbus worker` subprocesses that die with the test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.procs: list[subprocess.Popen[str]] = []
        self.live: dict[str, subprocess.Popen[str]] = {}
        self.output: list[str] = []
        self._drains: list[threading.Thread] = []

    def start(self, consumer: str, *extra: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentbus", "worker", APP, "--url", self.url,
             "--consumer", consumer, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "hosting" in line, f"worker did not start: {line!r}"
        self.procs.append(proc)
        self.live[consumer] = proc
        drain = threading.Thread(target=lambda: self.output.extend(proc.stdout or ()), daemon=True)
        drain.start()
        self._drains.append(drain)
        return proc

    def kill(self, consumer: str) -> None:
        proc = self.live.pop(consumer)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for drain in self._drains:
            drain.join(timeout=5)
        for proc in self.procs:
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def workers(server: RedisServer) -> Iterator[Workers]:
    w = Workers(server.url + "?prefix=rel:")
    try:
        yield w
    finally:
        w.stop_all()


async def _outputs(transport: Transport, topic: str) -> list[Any]:
    entries = await transport.read_tail(topic, "0-0", count=1_000_000, block_ms=None)
    return [Handled.model_validate(Envelope.decode(d.payload or b"").data) for d in entries]


async def _publish_all(rt: Runtime, topic: str, items: list[Message]) -> None:
    for start in range(0, len(items), 250):
        chunk = items[start : start + 250]
        await asyncio.gather(*(rt.publish(m, topic) for m in chunk))


async def _group(transport: Transport, topic: str, group: str) -> Any:
    for info in await transport.topics():
        if info.topic == topic:
            return next(g for g in info.groups if g.name == group)
    raise AssertionError(f"no topic {topic!r}")


# -- worker crash ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("topic", "out", "group"),
    [("rel.once", "rel.once.out", "rel-once"), ("rel.items", "rel.handled", "rel-crunch")],
    ids=["dedupe", "at-least-once"],
)
async def test_sigkilled_workers_lose_nothing(
    workers: Workers, topic: str, out: str, group: str
) -> None:
    total = 5000
    opts = ("--visibility-timeout", "1.0", "--concurrency", "16")
    workers.start("w1", *opts)
    workers.start("w2", *opts)
    async with Runtime(workers.url) as rt:
        async with rt.run("crash-loop"):
            await _publish_all(rt, topic, [Item(n=n, sleep=0.002) for n in range(total)])
        kills = 0
        for round_ in range(4):
            # Let some work happen, then kill a worker in the middle of it.
            floor = (round_ + 1) * total // 6

            async def progressed(floor: int = floor) -> bool:
                return len(await _outputs(rt.transport, out)) >= floor

            await wait_for(progressed, timeout=30, message=f"{floor} outputs")
            victim = "w1" if round_ % 2 == 0 else "w2"
            workers.kill(victim)
            kills += 1
            # Half the time the replacement has the victim's name (it resumes its own
            # pending entries at once); otherwise the survivor claims them when idle.
            workers.start(victim if round_ < 2 else f"{victim}-{round_}", *opts)

        async def all_handled() -> bool:
            return {h.n for h in await _outputs(rt.transport, out)} == set(range(total))

        await wait_for(all_handled, timeout=60, message=f"all {total} handled")

        async def drained() -> bool:
            g = await _group(rt.transport, topic, group)
            return bool(g.pending == 0 and g.lag == 0)

        await wait_for(drained, timeout=30, message="nothing pending")
        outputs = await _outputs(rt.transport, out)
        counts = Counter(h.n for h in outputs)
        assert set(counts) == set(range(total)), "some messages were lost"
        assert kills == 4
        if topic == "rel.once":
            twice = {n: c for n, c in counts.items() if c > 1}
            assert not twice, f"de-duplicated effects happened twice: {twice}"
        assert await rt.transport.dead_letters(topic) == []
