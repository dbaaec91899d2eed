"""Memory: resident memory per 10,000 idle agent instances.

agentbus: 10,000 instances of a one-handler agent hosted by a runtime on the memory
transport (each hosted instance has its subscription with its read loop and lease
task). Baseline: 10,000 instances of a one-handler ``RoutedAgent`` live in autogen-core's
``SingleThreadedAgentRuntime`` (created through ``try_get_underlying_agent_instance``).

Each measurement runs in a fresh interpreter (``python -m benchmarks.footprint KIND N``)
so earlier scenarios' garbage does not blur it: RSS after ``gc.collect()`` with all
instances alive, minus RSS with one instance, read with psutil.

On Redis each hosted agent instance's read loop holds its own blocking connection, so
10,000 instances in one process would need 10,000 connections (Redis allows 10,000
clients by default); that is why the measurement uses the memory transport.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
from pathlib import Path
from typing import Any

from agentbus import Agent, Context, MemoryTransport, Runtime, handle

from ._harness import Outcome, Ping, Row, Settings, interleave, median, ratios

NAME = "footprint"
TITLE = "Resident memory per 10,000 idle agent instances"
TOPIC = "bench.idle"
ROOT = Path(__file__).resolve().parent.parent


class Idle(Agent, name="bench-idle"):
    """An agent that never receives anything."""

    @handle(TOPIC)
    async def on_ping(self, msg: Ping, ctx: Context) -> None:
        return None


def _rss() -> int:
    import psutil  # type: ignore[import-untyped]

    gc.collect()
    return int(psutil.Process().memory_info().rss)


async def agentbus_rss(n: int) -> int:
    transport = MemoryTransport()
    first = Runtime(transport=transport)
    first.add(Idle())
    await first.start()
    await asyncio.sleep(0.05)
    before = _rss()
    many = Runtime(transport=transport)
    many.add(*(Idle() for _ in range(n)))
    await many.start()
    await asyncio.sleep(0.2)  # every read loop has reached its first wait
    return _rss() - before  # no teardown: the process exits right after (see main)


async def autogen_rss(n: int) -> int:
    from autogen_core import AgentId, SingleThreadedAgentRuntime, TypeSubscription

    from ._autogen import AutogenSink as cls

    runtime = SingleThreadedAgentRuntime()
    await cls.register(runtime, "bench-idle", cls)
    await runtime.add_subscription(TypeSubscription(TOPIC, "bench-idle"))
    runtime.start()
    await runtime.try_get_underlying_agent_instance(AgentId("bench-idle", "first"))
    before = _rss()
    for i in range(n):
        await runtime.try_get_underlying_agent_instance(AgentId("bench-idle", str(i)))
    return _rss() - before


async def measure_in_subprocess(kind: str, n: int) -> float:
    """MiB per ``n`` instances, measured in a fresh interpreter."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.footprint",
        kind,
        str(n),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    stdout, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the {kind} footprint measurement exited with {proc.returncode}")
    return float(json.loads(stdout)["bytes"]) / 2**20


async def run(settings: Settings) -> Outcome:
    n = 10_000
    results = await interleave(
        settings.rounds,
        [
            ("autogen", lambda r: measure_in_subprocess("autogen", n if r >= 0 else 100)),
            ("agentbus", lambda r: measure_in_subprocess("agentbus", n if r >= 0 else 100)),
        ],
    )
    out = Outcome(NAME)
    out.rows.append(
        Row(
            NAME,
            f"RSS per {n:,} idle agents (MiB)",
            f"{median(results['agentbus']):.1f}",
            f"autogen-core {median(results['autogen']):.1f}",
            ratios(results["agentbus"], results["autogen"]),
            note="lower is better",
        )
    )
    out.notes.append(
        "footprint: each measurement in a fresh interpreter; MiB per round: "
        + "; ".join(f"{k}: {', '.join(f'{v:.1f}' for v in vs)}" for k, vs in results.items())
    )
    return out


def main(argv: list[str]) -> None:
    kind, n = argv[0], int(argv[1])
    fn: Any = agentbus_rss if kind == "agentbus" else autogen_rss

    async def measure() -> None:
        print(json.dumps({"kind": kind, "n": n, "bytes": await fn(n)}), flush=True)
        # Tearing down 10,000 hosted agents takes longer than measuring them, and this
        # process exists only to measure: leave at once.
        os._exit(0)

    asyncio.run(measure())


if __name__ == "__main__":
    main(sys.argv[1:])
