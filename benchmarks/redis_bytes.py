"""Bytes of Redis per event, inside a run and outside one, before and after trimming.

::

    python benchmarks/redis_bytes.py [--events 2000] [--redis-url redis://127.0.0.1:6379/0]

Each scenario runs under its own key prefix on the given Redis (deleted afterwards): a
one-handler agent handles ``--events`` events of 446 encoded bytes, published inside
one run or each outside any run (each then opens a run of its own). Memory is summed
over every key of the prefix with ``MEMORY USAGE key SAMPLES 0`` (exact for streams
and hashes), and taken again after the runtime's maintenance step has trimmed what
every group acknowledged, and after pruning every run. ``INFO memory`` deltas are printed too: they include the
allocator's overhead and anything else the server did meanwhile, so read them as a
cross-check, not as the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import redis.asyncio as aioredis

from agentbus import Agent, Context, Message, Retention, Runtime, handle
from agentbus.testing import unique_prefix, wait_for

TOPIC = "bytes.events"
#: Makes the encoded envelope 446 bytes (the size of issue 12's measurement).
TEXT_CHARS = 197


class Payload(Message, type="bench.Payload"):
    text: str


class Sink(Agent, name="bytes-sink"):
    def __init__(self) -> None:
        super().__init__()
        self.handled = 0

    @handle(TOPIC)
    async def on_payload(self, msg: Payload, ctx: Context) -> None:
        self.handled += 1


async def footprint(r: Any, prefix: str) -> tuple[int, int, dict[str, int]]:
    """(bytes, keys, bytes by key kind) under ``prefix``."""
    total, keys = 0, 0
    kinds: dict[str, int] = {}
    async for key in r.scan_iter(match=prefix + "*", count=1000):
        size = int(await r.memory_usage(key, samples=0) or 0)
        kind = key.decode()[len(prefix) :].split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + size
        total += size
        keys += 1
    return total, keys, kinds


async def used_memory(r: Any) -> int:
    return int((await r.info("memory"))["used_memory"])


async def scenario(url: str, events: int, inside_run: bool) -> dict[str, Any]:
    prefix = unique_prefix("bytes")
    r = aioredis.Redis.from_url(url)
    sink = Sink()
    rt = Runtime(f"{url}?prefix={prefix}", retention=Retention(interval=None))
    rt.add(sink)
    try:
        await rt.start()
        probe = Payload(text="x" * TEXT_CHARS)
        before = await used_memory(r)
        if inside_run:
            async with rt.run("bytes") as run:
                for _ in range(events):
                    await run.publish(TOPIC, probe)
        else:
            for _ in range(events):
                await rt.publish(TOPIC, probe)
        await wait_for(lambda: sink.handled == events, timeout=120, message="all handled")
        await rt.idle()
        after = await used_memory(r)
        held, keys, kinds = await footprint(r, prefix)
        size = await _event_size(r, prefix)
        await rt.maintenance.run_once()
        trimmed, keys_after, kinds_after = await footprint(r, prefix)
        await rt.transport.store.prune_runs(before=time.time() + 1)  # journal retention of 0 s
        pruned, keys_pruned, _ = await footprint(r, prefix)
        return {
            "event_bytes": size,
            "bytes_per_event": held / events,
            "keys_per_event": keys / events,
            "by_kind_per_event": {k: round(v / events) for k, v in sorted(kinds.items())},
            "info_delta_per_event": (after - before) / events,
            "after_trim_per_event": trimmed / events,
            "after_trim_by_kind": {k: round(v / events) for k, v in sorted(kinds_after.items())},
            "keys_after_trim_per_event": keys_after / events,
            "after_prune_bytes": pruned,
            "after_prune_keys": keys_pruned,
        }
    finally:
        await rt.aclose()
        async for key in r.scan_iter(match=prefix + "*", count=1000):
            await r.unlink(key)
        await r.aclose()


async def _event_size(r: Any, prefix: str) -> int:
    """Encoded size of one event as stored in the journal's ``published`` record."""
    async for key in r.scan_iter(match=prefix + "topic:" + TOPIC, count=1000):
        rows = await r.xrange(key, count=1)
        if rows:
            return len(rows[0][1][b"e"])
    return 0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    for inside in (True, False):
        result = await scenario(args.redis_url, args.events, inside)
        where = "inside one run" if inside else "outside any run"
        print(f"{args.events} events {where}:")
        for name, value in result.items():
            shown = f"{value:,.1f}" if isinstance(value, float) else value
            print(f"  {name}: {shown}")


if __name__ == "__main__":
    asyncio.run(main())
