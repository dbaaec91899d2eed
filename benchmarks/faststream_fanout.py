"""FastStream doing the same fan-out as ``fanout``: Redis Streams with a consumer group.

FastStream's fastest correct usage we found: a *batch* stream subscriber
(``StreamSub(..., group=, consumer=, batch=True, max_records=64)``: one ``XREADGROUP`` and
one ``XACK`` per batch, acked after the handler returns) and publishing through a redis-py
pipeline (``broker.publish(..., stream=, pipeline=pipe)``, 64 per pipeline). Its handler
receives the decoded JSON bodies (FastStream parses them); the body is the same encoded
event agentbus stores. agentbus runs exactly as in ``fanout`` (journal on, and off).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ._harness import (
    WINDOW,
    Outcome,
    Row,
    Settings,
    Stopwatch,
    check_drained,
    delete_prefix,
    interleave,
    median,
    ping_payload,
    ratios,
    round_size,
    unique_prefix,
)
from .fanout import agentbus_fanout

NAME = "faststream"
TITLE = "FastStream (Redis Streams, consumer group) doing the same fan-out"


async def faststream_fanout(url: str, n: int, payload: bytes) -> float:
    from faststream.redis import RedisBroker, StreamSub

    prefix = unique_prefix("faststream")
    stream, group = prefix + "stream", "bench-sink"
    quiet = logging.getLogger("benchmarks.faststream")
    quiet.setLevel(logging.CRITICAL)
    broker = RedisBroker(url, logger=quiet)
    handled = 0
    done = asyncio.Event()

    @broker.subscriber(
        stream=StreamSub(
            stream,
            group=group,
            consumer="c1",
            batch=True,
            max_records=WINDOW,
            polling_interval=1000,
        )
    )
    async def on_batch(msgs: list[dict[str, Any]]) -> None:
        nonlocal handled
        handled += len(msgs)
        if handled >= n:
            done.set()

    try:
        await broker.start()
        client = broker._connection  # FastStream's own Redis client (what its docs inject)
        assert client is not None
        with Stopwatch() as sw:
            for start in range(0, n, WINDOW):
                async with client.pipeline(transaction=False) as pipe:
                    for _ in range(min(WINDOW, n - start)):
                        await broker.publish(payload, stream=stream, pipeline=pipe)
                    await pipe.execute()
            await asyncio.wait_for(done.wait(), timeout=30 + n / 100)
            # The batch is acked after the handler returns: wait for that too.
            while True:
                if not (await client.xpending(stream, group))["pending"]:
                    break
                await asyncio.sleep(0.001)
        await check_drained(url, stream, group, n, handled, "FastStream fan-out")
    finally:
        await broker.stop()
        await delete_prefix(url, prefix)
    return n / sw.seconds


async def run(settings: Settings) -> Outcome:
    n = settings.count(3000, 1000)
    url = settings.redis_url
    payload = ping_payload()
    size = round_size(n, 200)
    results = await interleave(
        settings.rounds,
        [
            ("faststream", lambda r: faststream_fanout(url, size(r), payload)),
            ("on", lambda r: agentbus_fanout(url, size(r), journal=True, label="fs-on")),
            ("off", lambda r: agentbus_fanout(url, size(r), journal=False, label="fs-off")),
        ],
    )
    base = f"FastStream {median(results['faststream']):,.0f}"
    out = Outcome(NAME)
    for variant, label in (("on", "journal on"), ("off", "journal off")):
        out.rows.append(
            Row(
                NAME,
                f"{n} msgs, {label} (msg/s)",
                f"{median(results[variant]):,.0f}",
                base,
                ratios(results[variant], results["faststream"]),
            )
        )
    out.notes.append(
        f"faststream: {n} messages per round; FastStream batch subscriber (max_records "
        f"{WINDOW}) + pipelined publishing. Per-round rates (msg/s): "
        + "; ".join(f"{k}: {', '.join(f'{v:,.0f}' for v in vs)}" for k, vs in results.items())
    )
    return out
