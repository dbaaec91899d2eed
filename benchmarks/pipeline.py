"""Pipeline on Redis: a chain of 5 agents, each forwarding to the next; messages/s end to end.

agentbus: stage ``i`` handles ``bench.pipe.i`` and returns the message, which its
``output=`` publishes to ``bench.pipe.i+1``; the last stage counts. The journal is on
(the default), so every hop records published, delivered and handled.

Baseline: redis-py doing the same hops: one consumer loop per stage reading its stream
(``XREADGROUP COUNT 64``) and forwarding the batch with one pipeline holding the
``XADD``s to the next stream and the ``XACK``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentbus import Agent, Context, Runtime, handle

from ._harness import (
    WINDOW,
    Outcome,
    Ping,
    Row,
    Settings,
    Stopwatch,
    check_drained,
    delete_prefix,
    interleave,
    median,
    ping_payload,
    ratios,
    redis_client,
    round_size,
    unique_prefix,
)
from .fanout import publish_all

NAME = "pipeline"
TITLE = "Pipeline of 5 agents on Redis, end to end"
STAGES = 5


def topic(i: int) -> str:
    return f"bench.pipe.{i}"


def _stage_class(i: int) -> type[Agent]:
    async def forward(self: Agent, msg: Ping, ctx: Context) -> Ping:
        return msg

    body: dict[str, Any] = {"forward": handle(topic(i), Ping, output=topic(i + 1))(forward)}
    return type(f"Stage{i}", (Agent,), body, name=f"bench-stage-{i}")


FORWARDERS = [_stage_class(i) for i in range(STAGES - 1)]


class Last(Agent, name=f"bench-stage-{STAGES - 1}"):
    """The last stage: counts arrivals."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.count = 0
        self.done = asyncio.Event()

    @handle(topic(STAGES - 1))
    async def arrive(self, msg: Ping, ctx: Context) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


async def agentbus_pipeline(url: str, n: int) -> float:
    prefix = unique_prefix("pipeline")
    last = Last(n)
    rt = Runtime(url, prefix=prefix)
    rt.add(*(cls() for cls in FORWARDERS), last)
    try:
        async with rt:
            async with rt.run("bench-pipeline") as run:
                with Stopwatch() as sw:
                    await publish_all(run, n, topic(0))
                    await asyncio.wait_for(last.done.wait(), timeout=60 + n / 20)
                    await rt.writer.flush()
            keys = rt.transport_keys
        for i in range(STAGES):
            count = last.count if i == STAGES - 1 else n  # forwarders are checked by the streams
            await check_drained(
                url, keys.topic(topic(i)), f"bench-stage-{i}", n, count, f"agentbus stage {i}"
            )
    finally:
        await delete_prefix(url, prefix)
    return n / sw.seconds


async def raw_pipeline(url: str, n: int, payload: bytes) -> float:
    prefix = unique_prefix("pipeline-raw")
    streams = [f"{prefix}s{i}" for i in range(STAGES)]
    writer = redis_client(url)
    readers = [redis_client(url) for _ in range(STAGES)]
    arrived = 0

    async def produce() -> None:
        for start in range(0, n, WINDOW):
            async with writer.pipeline(transaction=False) as pipe:
                for _ in range(min(WINDOW, n - start)):
                    pipe.xadd(streams[0], {"e": payload})
                await pipe.execute()

    async def stage(i: int) -> None:
        nonlocal arrived
        seen = 0
        while seen < n:
            reply = await readers[i].xreadgroup(
                "g", "c1", {streams[i]: ">"}, count=WINDOW, block=1000
            )
            for _, entries in reply or []:
                seen += len(entries)
                async with writer.pipeline(transaction=False) as pipe:
                    if i + 1 < STAGES:
                        for _, fields in entries:
                            pipe.xadd(streams[i + 1], {"e": fields[b"e"]})
                    pipe.xack(streams[i], "g", *(entry_id for entry_id, _ in entries))
                    await pipe.execute()
        if i == STAGES - 1:
            arrived = seen

    try:
        for s in streams:
            await writer.xgroup_create(s, "g", id="0", mkstream=True)
        with Stopwatch() as sw:
            await asyncio.wait_for(
                asyncio.gather(produce(), *(stage(i) for i in range(STAGES))),
                timeout=60 + n / 20,
            )
        for i, s in enumerate(streams):
            await check_drained(url, s, "g", n, arrived if i == STAGES - 1 else n, "raw stage")
    finally:
        await writer.aclose()
        for r in readers:
            await r.aclose()
        await delete_prefix(url, prefix)
    return n / sw.seconds


async def run(settings: Settings) -> Outcome:
    n = settings.count(1000, 400)
    url = settings.redis_url
    payload = ping_payload()
    size = round_size(n, 100)
    results = await interleave(
        settings.rounds,
        [
            ("raw", lambda r: raw_pipeline(url, size(r), payload)),
            ("agentbus", lambda r: agentbus_pipeline(url, size(r))),
        ],
    )
    out = Outcome(NAME)
    out.rows.append(
        Row(
            NAME,
            f"{n} msgs x {STAGES} agents, journal on (msg/s end to end)",
            f"{median(results['agentbus']):,.0f}",
            f"raw redis-py {median(results['raw']):,.0f}",
            ratios(results["agentbus"], results["raw"]),
        )
    )
    out.notes.append(
        f"pipeline: {n} messages through {STAGES} stages ({STAGES * n} deliveries per round); "
        "all agents in one runtime (one process). Per-round rates (msg/s): "
        + "; ".join(f"{k}: {', '.join(f'{v:,.0f}' for v in vs)}" for k, vs in results.items())
    )
    return out
