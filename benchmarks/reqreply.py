"""Request/reply latency on Redis: one request in flight, p50 and p99.

agentbus: ``run.request("bench.echo", Ping)`` to an agent that returns the message; the
runtime publishes the request (with its journal records), the agent's read loop gets
it, the reply goes to the requester's inbox stream, the requester's inbox reader wakes.

Baseline: redis-py doing the same hops: ``XADD`` the request, a server loop blocked in
``XREADGROUP`` answers with one pipeline (``XADD`` to the inbox + ``XACK``), the client
is blocked in ``XREAD`` on its inbox. Target: agentbus p50 within 3x of the raw p50.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agentbus import Agent, Context, Runtime, handle

from ._harness import (
    Outcome,
    Ping,
    Row,
    Settings,
    check_drained,
    delete_prefix,
    interleave,
    median,
    percentile,
    ping,
    ping_payload,
    redis_client,
    unique_prefix,
)

NAME = "latency"
TITLE = "Request/reply latency on Redis (one request in flight)"
TOPIC = "bench.echo"


class Echo(Agent, name="bench-echo"):
    """Replies with the request."""

    handled = 0

    @handle(TOPIC)
    async def echo(self, msg: Ping, ctx: Context) -> Ping:
        self.handled += 1
        return msg


class AgentbusSide:
    """A runtime hosting ``Echo`` and a run that sends requests to it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = unique_prefix("latency")
        self.echo = Echo()
        self.rt = Runtime(url, prefix=self.prefix)
        self.rt.add(self.echo)
        self.sent = 0

    async def __aenter__(self) -> AgentbusSide:
        await self.rt.start()
        self.run = self.rt.run("bench-latency")
        await self.run.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.run.__aexit__(None, None, None)
            await self.rt.aclose()
            keys = self.rt.transport_keys
            await check_drained(
                self.url, keys.topic(TOPIC), self.echo.name, self.sent, self.echo.handled, "echo"
            )
        finally:
            await delete_prefix(self.url, self.prefix)

    async def samples(self, count: int) -> list[float]:
        out = []
        for seq in range(count):
            t0 = time.perf_counter()
            reply = await self.run.request(TOPIC, ping(seq), timeout=10, expect=Ping)
            out.append(time.perf_counter() - t0)
            assert reply.seq == seq
            self.sent += 1
        return out


class RawSide:
    """The same hops with redis-py: request stream, server loop, inbox stream."""

    def __init__(self, url: str) -> None:
        self.url = url
        prefix = unique_prefix("latency-raw")
        self.prefix = prefix
        self.requests, self.inbox = prefix + "requests", prefix + "inbox"
        self.payload = ping_payload()
        self.client, self.client_block = redis_client(url), redis_client(url)
        self.server, self.server_block = redis_client(url), redis_client(url)
        self.last = b"0-0"
        self.sent = self.served = 0

    async def __aenter__(self) -> RawSide:
        await self.server.xgroup_create(self.requests, "g", id="$", mkstream=True)
        self.task = asyncio.create_task(self._serve())
        return self

    async def _serve(self) -> None:
        while True:
            reply = await self.server_block.xreadgroup(
                "g", "s1", {self.requests: ">"}, count=16, block=1000
            )
            for _, entries in reply or []:
                async with self.server.pipeline(transaction=False) as pipe:
                    for _, fields in entries:
                        pipe.xadd(fields[b"reply_to"], {"e": fields[b"e"]})
                    pipe.xack(self.requests, "g", *(entry_id for entry_id, _ in entries))
                    await pipe.execute()
                self.served += len(entries)

    async def __aexit__(self, *exc: Any) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        try:
            await check_drained(self.url, self.requests, "g", self.sent, self.served, "raw echo")
        finally:
            for r in (self.client, self.client_block, self.server, self.server_block):
                await r.aclose()
            await delete_prefix(self.url, self.prefix)

    async def samples(self, count: int) -> list[float]:
        out = []
        for _ in range(count):
            t0 = time.perf_counter()
            await self.client.xadd(self.requests, {"e": self.payload, "reply_to": self.inbox})
            while True:
                reply = await self.client_block.xread({self.inbox: self.last}, count=1, block=5000)
                if reply:
                    self.last = reply[0][1][-1][0]
                    break
            out.append(time.perf_counter() - t0)
            self.sent += 1
        return out


async def run(settings: Settings) -> Outcome:
    per_round = settings.count(200, 60)
    url = settings.redis_url
    samples: dict[str, list[float]] = {"agentbus": [], "raw": []}
    async with AgentbusSide(url) as ab, RawSide(url) as raw:

        async def measure(side: AgentbusSide | RawSide, name: str, r: int) -> float:
            got = await side.samples(20 if r < 0 else per_round)
            if r >= 0:
                samples[name].extend(got)
            return median(got)

        rounds = await interleave(
            settings.rounds,
            [
                ("raw", lambda r: measure(raw, "raw", r)),
                ("agentbus", lambda r: measure(ab, "agentbus", r)),
            ],
        )
    out = Outcome(NAME)
    ms = {k: {p: percentile(v, p) * 1000 for p in (50, 99)} for k, v in samples.items()}
    ratio50 = ms["agentbus"][50] / ms["raw"][50]
    out.rows.append(
        Row(
            NAME,
            "request/reply p50 (ms)",
            f"{ms['agentbus'][50]:.2f}",
            f"raw round trip {ms['raw'][50]:.2f}",
            ratio50,
            "<= 3.0",
            ratio50 <= 3.0,
        )
    )
    out.rows.append(
        Row(
            NAME,
            "request/reply p99 (ms)",
            f"{ms['agentbus'][99]:.2f}",
            f"raw round trip {ms['raw'][99]:.2f}",
            ms["agentbus"][99] / ms["raw"][99],
        )
    )
    out.notes.append(
        f"latency: {per_round} sequential requests per round and side, journal on; "
        "percentiles over all recorded samples; per-round medians (ms): "
        + "; ".join(f"{k}: {', '.join(f'{v * 1000:.2f}' for v in vs)}" for k, vs in rounds.items())
    )
    return out
