"""The embedded (memory) transport against autogen-core's ``SingleThreadedAgentRuntime``.

Both publish N ``Ping`` messages to a topic one subscriber handles with a no-op handler,
in one process, publishes awaited one after the other; the clock stops when the
subscriber has handled all N (agentbus: and its acks and journal are written;
autogen-core: ``stop_when_idle``). agentbus runs with its defaults, journal on (kept in
memory: ``memory://?journal=``). Target: agentbus ≥ 3x autogen-core's rate.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentbus import Agent, Context, Runtime, handle

from ._harness import (
    BenchError,
    Outcome,
    Ping,
    Row,
    Settings,
    Stopwatch,
    interleave,
    median,
    ping,
    ratios,
    round_size,
)

NAME = "memory"
TITLE = "Memory transport vs autogen-core SingleThreadedAgentRuntime (in process)"
TOPIC = "bench.memory"


class MemSink(Agent, name="bench-mem-sink"):
    """Counts; ``done`` at ``expected``."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.count = 0
        self.done = asyncio.Event()

    @handle(TOPIC)
    async def on_ping(self, msg: Ping, ctx: Context) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


async def agentbus_memory(n: int, *, journal: bool = True) -> float:
    sink = MemSink(n)
    rt = Runtime("memory://?journal=", journal=journal)
    rt.add(sink)
    async with rt:
        async with rt.run("bench-memory") as run:
            with Stopwatch() as sw:
                for seq in range(n):
                    await run.publish(TOPIC, ping(seq))
                await asyncio.wait_for(sink.done.wait(), timeout=30 + n / 100)
                await rt.writer.flush()
        topics = {t.topic: t for t in await rt.transport.admin.topics()}
    group = topics[TOPIC].groups[0]
    if sink.count != n or group.pending or topics[TOPIC].length != n:
        raise BenchError(
            f"agentbus memory: published {n}, handled {sink.count}, {group.pending} pending"
        )
    return n / sw.seconds


async def autogen_memory(n: int) -> float:
    from autogen_core import SingleThreadedAgentRuntime, TopicId, TypeSubscription

    from ._autogen import AutogenSink as cls

    runtime = SingleThreadedAgentRuntime()
    made: list[Any] = []

    async def factory() -> Any:
        made.append(cls())
        return made[-1]

    await cls.register(runtime, "bench-sink", factory)
    await runtime.add_subscription(TypeSubscription(TOPIC, "bench-sink"))
    runtime.start()
    topic = TopicId(TOPIC, "default")
    with Stopwatch() as sw:
        for seq in range(n):
            await runtime.publish_message(ping(seq), topic)
        await runtime.stop_when_idle()
    handled = sum(a.count for a in made)
    if handled != n:
        raise BenchError(f"autogen-core: published {n}, handled {handled}")
    return n / sw.seconds


async def run(settings: Settings) -> Outcome:
    n = settings.count(10_000, 3000)
    size = round_size(n, 500)
    results = await interleave(
        settings.rounds,
        [
            ("autogen", lambda r: autogen_memory(size(r))),
            ("agentbus", lambda r: agentbus_memory(size(r))),
            ("agentbus-nojournal", lambda r: agentbus_memory(size(r), journal=False)),
        ],
    )
    out = Outcome(NAME)
    base = f"autogen-core {median(results['autogen']):,.0f}"
    ratio = ratios(results["agentbus"], results["autogen"])
    out.rows.append(
        Row(
            NAME,
            f"{n} msgs, journal on (msg/s)",
            f"{median(results['agentbus']):,.0f}",
            base,
            ratio,
            ">= 3.0",
            ratio >= 3.0,
        )
    )
    out.rows.append(
        Row(
            NAME,
            f"{n} msgs, journal off (msg/s)",
            f"{median(results['agentbus-nojournal']):,.0f}",
            base,
            ratios(results["agentbus-nojournal"], results["autogen"]),
        )
    )
    out.notes.append(
        f"memory: {n} messages per round, sequential awaited publishes on both sides. "
        "Per-round rates (msg/s): "
        + "; ".join(f"{k}: {', '.join(f'{v:,.0f}' for v in vs)}" for k, vs in results.items())
    )
    return out
