"""Soak: a steady load for a set time, with worker kills and a Redis crash, then the tally.

    python benchmarks/soak.py --seconds 60

Starts its own ``redis-server`` (AOF, ``appendfsync always``) on a free loopback port,
``--workers`` ``agentbus worker`` processes hosting this file's app, and publishes
``--rate`` events per second. Every ``--kill-every`` seconds one worker is SIGKILLed and
replaced; halfway through Redis itself is SIGKILLed and restarted. At the end it waits
for the backlog to drain and prints messages sent (publishes that returned), handled,
lost, duplicated and the p99 publish-to-handled latency. Exit status 1 if anything was
lost (or, with de-duplication on, duplicated).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from agentbus import (
    Agent,
    App,
    Context,
    Envelope,
    Message,
    Runtime,
    TransportUnavailable,
    handle,
)

TOPIC, TOPIC_ONCE, OUT = "soak.load", "soak.load.once", "soak.done"


class Load(Message, type="soak.Load"):
    n: int
    sent: float


class Done(Message, type="soak.Done"):
    n: int
    sent: float
    handled: float


class Steady(Agent, name="soak-steady"):
    @handle(TOPIC, output=OUT)
    async def work(self, load: Load, ctx: Context) -> Done:
        await asyncio.sleep(0.001)  # a little work, so kills land mid-handler
        return Done(n=load.n, sent=load.sent, handled=time.time())


class SteadyOnce(Agent, name="soak-once"):
    @handle(TOPIC_ONCE, output=OUT, dedupe=True)
    async def work(self, load: Load, ctx: Context) -> Done:
        await asyncio.sleep(0.001)
        return Done(n=load.n, sent=load.sent, handled=time.time())


app = App("soak", [Steady, SteadyOnce])


class Fleet:
    """The worker processes, replaced as they are killed."""

    def __init__(self, url: str, visibility_timeout: float) -> None:
        self.url = url
        self.opts = ["--visibility-timeout", str(visibility_timeout), "--concurrency", "32"]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0

    def start(self) -> None:
        self.started += 1
        name = f"soak-w{self.started}"
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "agentbus", "worker", f"{Path(__file__).resolve()}:app",
             "--url", self.url, "--consumer", name, *self.opts],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill_one(self) -> str:
        name = random.choice(sorted(self.procs))
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.start()
        return name

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def publish_steadily(
    rt: Runtime, topic: str, rate: float, until: float, sent: dict[int, float]
) -> None:
    """Publish at ``rate``/s until ``until``; a publish is retried (same event) until it returns."""
    n = 0
    next_at = time.monotonic()
    while time.monotonic() < until:
        env = Envelope.for_message(Load(n=n, sent=time.time()), source="soak")
        while True:
            try:
                await rt.publish_envelope(topic, env)
                break
            except TransportUnavailable:
                await asyncio.sleep(0.05)
        sent[n] = time.time()
        n += 1
        next_at += 1 / rate
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def outputs(rt: Runtime) -> list[Done]:
    out: list[Done] = []
    after = "0-0"
    while True:
        batch = await rt.transport.read_tail(OUT, after, count=10_000, block_ms=None)
        if not batch:
            return out
        after = batch[-1].entry_id
        out += [Done.model_validate(Envelope.decode(d.payload or b"").data) for d in batch]


async def soak(args: argparse.Namespace) -> int:
    from agentbus.testing.redis_server import RedisServer

    topic = TOPIC if args.no_dedupe else TOPIC_ONCE
    with RedisServer(appendonly=True, appendfsync="always") as server:
        url = server.url + "?prefix=soak:"
        fleet = Fleet(url, args.visibility_timeout)
        for _ in range(args.workers):
            fleet.start()
        sent: dict[int, float] = {}
        kills, restarts = 0, 0
        try:
            async with Runtime(url) as rt:
                start = time.monotonic()
                until = start + args.seconds
                publisher = asyncio.create_task(publish_steadily(rt, topic, args.rate, until, sent))
                next_kill = start + args.kill_every
                restart_at = start + args.seconds / 2
                while not publisher.done():
                    now = time.monotonic()
                    if now >= next_kill:
                        print(f"[{now - start:5.1f}s] SIGKILL {fleet.kill_one()}", flush=True)
                        kills += 1
                        next_kill += args.kill_every
                    if restart_at and now >= restart_at:
                        print(f"[{now - start:5.1f}s] SIGKILL redis-server, restart", flush=True)
                        server.kill()
                        await asyncio.sleep(1.0)
                        server.start()
                        restarts += 1
                        restart_at = 0.0
                    await asyncio.sleep(0.05)
                await publisher
                drain_until = time.monotonic() + args.drain
                while time.monotonic() < drain_until:
                    if {d.n for d in await outputs(rt)} >= set(sent):
                        break
                    await asyncio.sleep(0.5)
                done = await outputs(rt)
        finally:
            fleet.stop()
    handled = {d.n for d in done}
    lost = len(set(sent) - handled)
    duplicated = len(done) - len(handled)
    first: dict[int, Done] = {}
    for d in done:
        first.setdefault(d.n, d)
    latencies = sorted((d.handled - d.sent) * 1000 for d in first.values())
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    print(f"mode        {'at-least-once' if args.no_dedupe else 'dedupe (exactly-once effects)'}")
    print(
        f"duration    {args.seconds:g}s, {len(sent) / args.seconds:.0f}/s achieved "
        f"(target {args.rate:g}/s), {kills} worker kills, {restarts} Redis restarts"
    )
    print(f"sent        {len(sent)}")
    print(f"handled     {len(handled)}")
    print(f"lost        {lost}")
    print(f"duplicated  {duplicated}")
    print(f"p99 latency {p99:.1f} ms")
    return 1 if lost or (duplicated and not args.no_dedupe) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to publish")
    parser.add_argument("--rate", type=float, default=200.0, help="events published per second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=10.0, help="seconds between kills")
    parser.add_argument("--visibility-timeout", type=float, default=2.0)
    parser.add_argument("--drain", type=float, default=60.0, help="max seconds to drain")
    parser.add_argument(
        "--no-dedupe", action="store_true", help="at-least-once handlers (duplicates expected)"
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
