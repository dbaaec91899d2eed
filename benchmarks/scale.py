"""Scale-out: 1, 2 and 4 worker processes sharing one agent's work on one Redis.

Each round the driver first records a backlog of N events (through a runtime, journal
on; not timed), then tells k worker processes to host the shared ``bench-scale-sink``
agent on that topic; the clock runs from that moment until the consumer group has read
every entry and has nothing pending (polled with ``XINFO GROUPS``). Workers are
``multiprocessing`` processes (spawned once, reused across rounds), each with its own
``Runtime``; journal on. Baseline: 1 worker; the ratio is the speed-up.

This machine's core count is printed with the results: with 2 cores, 4 workers plus
Redis plus the driver compete for them, so the speed-up cannot be linear.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from multiprocessing.connection import Connection
from typing import Any

from agentbus import Agent, Context, Runtime, handle

from ._harness import (
    BenchError,
    Outcome,
    Ping,
    Row,
    Settings,
    Variant,
    delete_prefix,
    interleave,
    median,
    ratios,
    redis_client,
    round_size,
    unique_prefix,
)
from .fanout import publish_all

NAME = "scale"
TITLE = "Scale-out: 1, 2 and 4 worker processes on one Redis"
TOPIC = "bench.scale"
GROUP = "bench-scale-sink"
COUNTS = (1, 2, 4)


class ScaleSink(Agent, name=GROUP):
    """A no-op agent that counts what this process handled."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    @handle(TOPIC)
    async def on_ping(self, msg: Ping, ctx: Context) -> None:
        self.count += 1


def worker_main(conn: Connection, url: str) -> None:
    """A worker process: hosts the sink on the prefix it is told, until told to stop."""
    asyncio.run(_serve(conn, url))


async def _serve(conn: Connection, url: str) -> None:
    loop = asyncio.get_running_loop()
    rt: Runtime | None = None
    sink = ScaleSink()
    conn.send("ready")
    while True:
        cmd, arg = await loop.run_in_executor(None, conn.recv)
        if cmd == "host":
            sink = ScaleSink()
            rt = Runtime(url, prefix=arg, block_ms=200)
            rt.add(sink)
            await rt.start()
            conn.send("hosting")
        elif cmd == "release":
            if rt is not None:
                await rt.aclose()
                rt = None
            conn.send(sink.count)
        else:
            return


class Workers:
    """Four reusable worker processes."""

    def __init__(self, url: str, size: int) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for _ in range(size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, url), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    async def ask(self, pipes: list[Connection], message: tuple[str, Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        for p in pipes:
            p.send(message)
        return [await loop.run_in_executor(None, p.recv) for p in pipes]

    async def ready(self) -> None:
        loop = asyncio.get_running_loop()
        for p in self.pipes:
            if await asyncio.wait_for(loop.run_in_executor(None, p.recv), 60) != "ready":
                raise BenchError("a worker process did not start")

    def close(self) -> None:
        for p in self.pipes:
            try:
                p.send(("stop", None))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()


def _drained(groups: list[dict[Any, Any]]) -> bool:
    for raw in groups:
        g = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == GROUP:
            return g.get("lag") == 0 and g.get("pending") == 0
    return False


async def one_round(url: str, workers: Workers, k: int, n: int) -> float:
    prefix = unique_prefix(f"scale{k}")
    try:
        rt = Runtime(url, prefix=prefix)
        async with rt, rt.run("bench-scale") as run:
            await publish_all(run, n, TOPIC)
        stream = rt.transport_keys.topic(TOPIC)
        r = redis_client(url)
        try:
            t0 = time.perf_counter()
            await workers.ask(workers.pipes[:k], ("host", prefix))
            deadline = t0 + 60 + n / 100
            while True:
                if _drained(await r.xinfo_groups(stream)):
                    break
                if time.perf_counter() > deadline:
                    raise BenchError(f"scale: {k} workers did not drain the topic in time")
                await asyncio.sleep(0.002)
            seconds = time.perf_counter() - t0
        finally:
            await r.aclose()
        counts = await workers.ask(workers.pipes[:k], ("release", None))
        if sum(counts) != n:
            raise BenchError(f"scale: {k} workers handled {counts} (sum != {n})")
    finally:
        await delete_prefix(url, prefix)
    return n / seconds


async def run(settings: Settings) -> Outcome:
    n = settings.count(4000, 1500)
    url = settings.redis_url
    workers = Workers(url, max(COUNTS))
    try:
        await workers.ready()
        size = round_size(n, 200)

        def variant(k: int) -> Variant:
            return (str(k), lambda r: one_round(url, workers, k, size(r)))

        results = await interleave(settings.rounds, [variant(k) for k in COUNTS])
    finally:
        workers.close()
    out = Outcome(NAME)
    for k in COUNTS[1:]:
        out.rows.append(
            Row(
                NAME,
                f"{n} msgs, {k} worker processes (msg/s)",
                f"{median(results[str(k)]):,.0f}",
                f"1 worker {median(results['1']):,.0f}",
                ratios(results[str(k)], results["1"]),
                note="speed-up",
            )
        )
    out.notes.append(
        f"scale: {os.cpu_count()} logical cores on this machine, shared by the workers, "
        f"Redis and the driver. {n} messages of backlog per round. Per-round rates (msg/s): "
        + "; ".join(
            f"{k} worker(s): {', '.join(f'{v:,.0f}' for v in vs)}" for k, vs in results.items()
        )
    )
    return out
