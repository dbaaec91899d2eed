"""Failover mid-run on a Redis Cluster (``CLUSTER FAILOVER`` on a replica) and on a
Sentinel-managed primary (``SENTINEL FAILOVER``): two ``agentbus worker`` processes and a
publisher keep going without a restart, and with ``?wait=1`` no publish that returned is
lost. Every publish that returned OK is counted and looked up afterwards on the surviving
primary: in the topic stream, in the run's journal, and among the handled outputs."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agentbus import Envelope, Runtime, TransportUnavailable
from agentbus.testing import wait_for
from agentbus.testing.redis_cluster import LocalCluster, SentinelGroup
from agentbus.testing.workers import WorkerProcesses

pytestmark = [pytest.mark.redis, pytest.mark.slow]

APP_FILE = Path(__file__).with_name("reliability_app.py")
APP = f"{APP_FILE}:app"
_spec = importlib.util.spec_from_file_location("reliability_app", APP_FILE)
assert _spec is not None
assert _spec.loader is not None
rel_app = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rel_app)
Item = rel_app.Item
Handled = rel_app.Handled
TOPIC, OUT = "rel.items", "rel.handled"
OPTS = ("--visibility-timeout", "2.0", "--concurrency", "16")


async def _drive(rt: Runtime, seconds: float, failover: Any) -> tuple[list[str], int, float]:
    """Publish one Item every 5 ms for ``seconds``, failing over a second in.

    Returns the ids of the publishes that returned, how many raised (each is retried with
    the same envelope until it returns, as the docs tell users to), and the failover time.
    """
    acked: list[str] = []
    errors = 0
    took: list[float] = []

    def run_failover() -> None:
        t0 = time.monotonic()
        failover()
        took.append(time.monotonic() - t0)

    switch = threading.Timer(1.0, run_failover)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    n = 0
    async with rt.run("failover"):
        switch.start()
        try:
            while loop.time() < deadline or not took:
                env = Envelope.for_message(Item(n=n), source="driver")
                while True:
                    try:
                        await rt.publish_envelope(TOPIC, env)
                        acked.append(env.id)
                        break
                    except TransportUnavailable:
                        errors += 1
                        await asyncio.sleep(0.05)
                n += 1
                await asyncio.sleep(0.005)
        finally:
            switch.join()
    return acked, errors, took[0] if took else float("nan")


async def _stored_ids(rt: Runtime, topic: str) -> list[str]:
    entries = await rt.transport.read_tail(topic, "0-0", count=1_000_000, block_ms=None)
    return [Envelope.decode(d.payload or b"").id for d in entries]


async def _check_nothing_acknowledged_lost(rt: Runtime, acked: list[str]) -> None:
    # Every acknowledged publish is in the topic on the surviving primary ...
    stored = set(await _stored_ids(rt, TOPIC))
    lost = [i for i in acked if i not in stored]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged publishes lost"

    # ... and handled by the workers, which kept going without a restart.
    async def all_handled() -> bool:
        out = await rt.transport.read_tail(OUT, "0-0", count=1_000_000, block_ms=None)
        seen = {Handled.model_validate(Envelope.decode(d.payload or b"").data).event for d in out}
        return set(acked) <= seen

    await wait_for(all_handled, timeout=60, interval=0.2, message="every acked event handled")


def test_cluster_failover_mid_run_loses_no_acknowledged_publish(tmp_path: Path) -> None:
    with LocalCluster(masters=3, replicas=1) as cluster:
        url = cluster.url_for("fo:") + "&wait=1"
        with WorkerProcesses(url, APP) as workers:
            workers.start(consumer="w1", extra=OPTS)
            workers.start(consumer="w2", extra=OPTS)

            async def main() -> tuple[list[str], int]:
                async with Runtime(url) as rt:
                    # Fail over the master that owns the topic's slot.
                    owner = cluster.master_of(rt.transport.keys.topic(TOPIC))
                    acked, errors, _ = await _drive(rt, 4.0, lambda: cluster.failover(owner))
                    await _check_nothing_acknowledged_lost(rt, acked)
                    return acked, errors

            acked, errors = asyncio.run(main())
            print(f"acknowledged {len(acked)}, refused and retried {errors}, lost 0")
            assert len(acked) > 100
            assert all(p.poll() is None for p in workers._live.values())


def test_sentinel_failover_mid_run_loses_no_acknowledged_publish(tmp_path: Path) -> None:
    # The old primary keeps taking writes for ~10 s after the promotion and then drops
    # them when it is demoted; with ?wait=1 none of those writes is acknowledged (its one
    # replica was promoted away), so the publisher retries them on the new primary.
    with SentinelGroup(replicas=1, sentinels=3) as group:
        url = group.url_for("fo:") + "&wait=1"
        with WorkerProcesses(url, APP) as workers:
            workers.start(consumer="w1", extra=OPTS)
            workers.start(consumer="w2", extra=OPTS)

            async def main() -> tuple[list[str], int]:
                async with Runtime(url) as rt:
                    acked, errors, _ = await _drive(rt, 4.0, group.failover)
                    await _check_nothing_acknowledged_lost(rt, acked)
                    return acked, errors

            acked, errors = asyncio.run(main())
            print(f"acknowledged {len(acked)}, refused and retried {errors}, lost 0")
            assert len(acked) > 100
            assert all(p.poll() is None for p in workers._live.values())
