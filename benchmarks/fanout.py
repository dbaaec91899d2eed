"""Fan-out throughput on Redis: N no-op messages through one shared-subscription agent.

agentbus: a run publishes N ``Ping`` events (64 publishes in flight, through the public
``Run.publish``) to a topic handled by one agent with a no-op handler; the clock stops
when every event was handled and its ack (and journal records) written.

Baseline: redis-py doing the same protocol work in the same process: pipelined ``XADD``
of the same bytes (64 per pipeline), ``XREADGROUP COUNT 64`` and one ``XACK`` per read.

Reported: agentbus/raw with the journal on (target ≥ 0.5) and off (target ≥ 0.8).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from agentbus import Agent, Context, Run, Runtime, handle

from ._harness import (
    WINDOW,
    BenchError,
    Outcome,
    Ping,
    Row,
    Settings,
    Stopwatch,
    check_drained,
    delete_prefix,
    interleave,
    median,
    ping,
    ping_payload,
    ratios,
    redis_client,
    round_size,
    unique_prefix,
)

NAME = "fanout"
TITLE = "Fan-out throughput on Redis (shared agent, no-op handler)"
TOPIC = "bench.fanout"
#: Journal records found after runs with ``journal=False`` (there should be none).
JOURNAL_OFF_RECORDS: list[int] = []


_DEFAULTS = inspect.signature(Runtime).parameters


class Sink(Agent, name="bench-sink"):
    """Counts the events it handles; ``done`` is set at ``expected``."""

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


async def publish_all(run: Run, n: int, topic: str, window: int = WINDOW) -> None:
    """Publish ``n`` pings with ``window`` publishes in flight (each lane in order)."""

    async def lane(start: int) -> None:
        for seq in range(start, n, window):
            await run.publish(topic, ping(seq))

    await asyncio.gather(*(lane(i) for i in range(min(window, n))))


async def agentbus_fanout(
    url: str, n: int, *, journal: bool = True, tracer: Any = None, label: str = "agentbus"
) -> float:
    """Messages per second through a shared agent; checks delivery and the journal."""
    prefix = unique_prefix(f"fanout-{label}")
    sink = Sink(n)
    rt = Runtime(url, prefix=prefix, journal=journal, tracer=tracer)
    rt.add(sink)
    try:
        async with rt:
            async with rt.run("bench-fanout") as run:
                with Stopwatch() as sw:
                    await publish_all(run, n, TOPIC)
                    await asyncio.wait_for(sink.done.wait(), timeout=30 + n / 100)
                    await rt.writer.flush()
            keys = rt.transport_keys
        await check_drained(url, keys.topic(TOPIC), sink.name, n, sink.count, f"{label} fan-out")
        r = redis_client(url)
        try:
            counters = await r.hmget(keys.run(run.run_id), "events", "records")
            events, records = (int(c or 0) for c in counters)
        finally:
            await r.aclose()
        if not journal:
            JOURNAL_OFF_RECORDS.append(records)
        else:
            # run_started + N x (published, delivered, handled) + run_finished
            if events != n or records != 3 * n + 2:
                raise BenchError(
                    f"{label}: the journal counts {events} events / {records} records, "
                    f"expected {n} / {3 * n + 2}"
                )
    finally:
        await delete_prefix(url, prefix)
    return n / sw.seconds


async def raw_fanout(url: str, n: int, payload: bytes) -> float:
    """The same protocol work with redis-py: pipelined XADD, XREADGROUP COUNT, XACK."""
    prefix = unique_prefix("fanout-raw")
    key, group = prefix + "stream", "bench-sink"
    r, reader = redis_client(url), redis_client(url)
    delivered = 0

    async def produce() -> None:
        for start in range(0, n, WINDOW):
            async with r.pipeline(transaction=False) as pipe:
                for _ in range(min(WINDOW, n - start)):
                    pipe.xadd(key, {"e": payload})
                await pipe.execute()

    async def consume() -> None:
        nonlocal delivered
        while delivered < n:
            reply = await reader.xreadgroup(group, "c1", {key: ">"}, count=WINDOW, block=1000)
            for _, entries in reply or []:
                ids = [entry_id for entry_id, _ in entries]
                delivered += len(ids)
                await r.xack(key, group, *ids)

    try:
        await r.xgroup_create(key, group, id="0", mkstream=True)
        with Stopwatch() as sw:
            await asyncio.wait_for(asyncio.gather(produce(), consume()), timeout=30 + n / 100)
        await check_drained(url, key, group, n, delivered, "raw fan-out")
    finally:
        await r.aclose()
        await reader.aclose()
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
            ("raw", lambda r: raw_fanout(url, size(r), payload)),
            ("on", lambda r: agentbus_fanout(url, size(r), journal=True, label="on")),
            ("off", lambda r: agentbus_fanout(url, size(r), journal=False, label="off")),
        ],
    )
    raw = median(results["raw"])
    out = Outcome(NAME)
    for variant, label, target in (("on", "journal on", 0.5), ("off", "journal off", 0.8)):
        ratio = ratios(results[variant], results["raw"])
        out.rows.append(
            Row(
                NAME,
                f"{n} msgs, {label} (msg/s)",
                f"{median(results[variant]):,.0f}",
                f"raw redis-py {raw:,.0f}",
                ratio,
                f">= {target}",
                ratio >= target,
            )
        )
    if any(JOURNAL_OFF_RECORDS):
        out.notes.append(
            f"fanout: with `Runtime(journal=False)` the runtime still wrote "
            f"{max(JOURNAL_OFF_RECORDS)} journal records for a {n}-message run (the delivery "
            "records `delivered`/`handled` ignore the flag), so 'journal off' rows measure "
            "that, not a journal-free hot path."
        )
    out.notes.append(
        f"fanout: {n} messages per round, {len(payload)}-byte events, {WINDOW} publishes in "
        "flight (agentbus) / 64 XADD per pipeline and XREADGROUP COUNT 64 (raw); default "
        f"Runtime settings (concurrency {_DEFAULTS['concurrency'].default}, batch "
        f"{_DEFAULTS['batch_size'].default}). Per-round rates (msg/s): "
        + "; ".join(f"{k}: {', '.join(f'{v:,.0f}' for v in vs)}" for k, vs in results.items())
    )
    return out
