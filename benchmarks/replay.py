"""Replay: reading, tracing and exporting a 100,000-event run; re-execution vs the live run.

The run is built by publishing 100,000 ``Ping`` events through a runtime on Redis with
the journal on (64 publishes in flight, no agent subscribed: with a handling agent the
journal would hold three records per event and reading 300,000 records with redis-py
alone takes ~20 s on a 2-core machine, too long to repeat five times). Then, interleaved
for each round (no warm-up round):

- baseline: redis-py reading the journal stream (``XRANGE`` pages + ``json.loads``);
- ``journal.records(run_id)``; ``agentbus.inspect.build_trace`` over those records;
  and ``agentbus.exchange.export_lines`` written to a JSON-lines file.

Re-execution (``agentbus.replay.replay_run``) re-publishes the run's inputs one at a
time and re-runs the agents on a fresh namespace; it is measured on a smaller run with a
handling agent (default 1,000 events), against that run's live rate, alternating live
and replay.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from agentbus import Agent, App, Context, Journal, JournalRecord, RunInfo, Runtime, handle
from agentbus.exchange import export_lines
from agentbus.inspect import build_trace

from ._harness import (
    BenchError,
    Outcome,
    Ping,
    Row,
    Settings,
    Stopwatch,
    delete_prefix,
    interleave,
    median,
    ratios,
    redis_client,
    unique_prefix,
    with_prefix,
)
from .fanout import publish_all

NAME = "replay"
TITLE = "Replay: trace and export of a 100,000-event run; re-execution rate"
TOPIC = "bench.replay"


class ReplaySink(Agent, name="bench-replay-sink"):
    """A no-op agent that counts what it handled."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.expected = 0
        self.done = asyncio.Event()

    @handle(TOPIC)
    async def on_ping(self, msg: Ping, ctx: Context) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


APP = App("bench-replay", [ReplaySink])


async def build_run(url: str, prefix: str, events: int, *, handled: bool) -> tuple[str, float]:
    """Record a run of ``events`` events (``handled`` by the app's agent, or not
    subscribed at all); returns its id and live rate (events/s)."""
    (sink,) = APP.build_agents()
    assert isinstance(sink, ReplaySink)
    sink.expected = events
    rt = Runtime(url, prefix=prefix)
    if handled:
        rt.add(sink)
    async with rt, rt.run(APP.name) as run:
        with Stopwatch() as sw:
            await publish_all(run, events, TOPIC)
            if handled:
                await asyncio.wait_for(sink.done.wait(), timeout=60 + events / 100)
            await rt.writer.flush()
    if handled and sink.count != events:
        raise BenchError(f"replay build: published {events}, handled {sink.count}")
    return run.run_id, events / sw.seconds


def export_seconds(folder: str, info: RunInfo, records: list[JournalRecord]) -> float:
    """Seconds to write the run as JSON lines (``agentbus.exchange``) to a file."""
    path = Path(folder) / "run.jsonl"
    t0 = time.perf_counter()
    with path.open("w", encoding="utf-8") as f:
        for line in export_lines(info, records):
            f.write(line + "\n")
    seconds = time.perf_counter() - t0
    path.unlink()
    return seconds


async def raw_read(url: str, key: str) -> int:
    r = redis_client(url)
    n, start = 0, "-"
    try:
        while True:
            rows = await r.xrange(key, min=start, count=10_000)
            for _, fields in rows:  # one chunk of records per entry
                n += len(json.loads(fields[b"c"]))
            if len(rows) < 10_000:
                return n
            start = "(" + rows[-1][0].decode()
    finally:
        await r.aclose()


async def trace_and_export(url: str, prefix: str, events: int, rounds: int) -> Outcome:
    run_id, live_rate = await build_run(url, prefix, events, handled=False)
    purl = with_prefix(url, prefix)
    out = Outcome(NAME)
    async with Journal.open(purl) as journal:
        info = await journal.run(run_id)
        key = journal.transport.keys.journal(run_id)
        held: dict[str, Any] = {"records": await journal.records(run_id)}
        total = len(held["records"])
        if total != events + 2:  # run_started, N x published, run_finished
            raise BenchError(f"replay: the journal holds {total} records, expected {events + 2}")
        tmp = tempfile.mkdtemp(prefix="agentbus-bench-")

        async def timed_raw(r: int) -> float:
            t0 = time.perf_counter()
            if await raw_read(url, key) != total:
                raise BenchError("replay: the raw read saw a different number of records")
            return time.perf_counter() - t0

        async def timed_records(r: int) -> float:
            held["records"] = None  # let the previous copy go before reading again
            t0 = time.perf_counter()
            held["records"] = await journal.records(run_id)
            return time.perf_counter() - t0

        async def timed_trace(r: int) -> float:
            t0 = time.perf_counter()
            trace = build_trace(info, held["records"])
            seconds = time.perf_counter() - t0
            if len(trace.events) != events:
                raise BenchError(f"replay: the trace has {len(trace.events)} events")
            return seconds

        async def timed_export(r: int) -> float:
            return export_seconds(tmp, info, held["records"])

        try:
            times = await interleave(
                rounds,
                [
                    ("raw", timed_raw),
                    ("records", timed_records),
                    ("trace", timed_trace),
                    ("export", timed_export),
                ],
                warm_up=False,
            )
        finally:
            os.rmdir(tmp)
    base = f"raw XRANGE+json {median(times['raw']):.2f}"
    for name, label in (
        ("records", "journal.records()"),
        ("trace", "build_trace()"),
        ("export", "JSON-lines export"),
    ):
        out.rows.append(
            Row(
                NAME,
                f"{events:,} events ({total:,} records): {label} (s)",
                f"{median(times[name]):.2f}",
                base,
                ratios(times[name], times["raw"]),
                note="time: lower is better",
            )
        )
    out.notes.append(
        f"replay: built the {events:,}-event run at {live_rate:,.0f} events/s (live, journal on, "
        "publish only, no agent subscribed). Times per round (s): "
        + "; ".join(f"{k}: {', '.join(f'{v:.2f}' for v in vs)}" for k, vs in times.items())
    )
    return out


async def reexecution(url: str, prefix: str, events: int, rounds: int) -> Row:
    purl = with_prefix(url, prefix)
    latest: dict[str, str] = {}

    async def live(r: int) -> float:
        run_id, rate = await build_run(url, prefix, events if r >= 0 else events // 4, handled=True)
        latest["run"] = run_id
        return rate

    async def again(r: int) -> float:
        from agentbus.replay import replay_run

        result = await replay_run(latest["run"], url=purl, app=APP)
        if not result.identical:
            raise BenchError(f"replay diverged: {result.divergence}")
        return result.recorded_events / result.seconds

    rates = await interleave(rounds, [("live", live), ("replay", again)])
    return Row(
        NAME,
        f"re-execution of a {events:,}-event run (events/s)",
        f"{median(rates['replay']):,.0f}",
        f"live run {median(rates['live']):,.0f}",
        ratios(rates["replay"], rates["live"]),
    )


async def run(settings: Settings) -> Outcome:
    events = settings.count(100_000, 10_000)
    small = 1000 if not settings.quick else 300
    url = settings.redis_url
    prefix = unique_prefix("replay")
    try:
        out = await trace_and_export(url, prefix, events, settings.rounds)
    finally:
        await delete_prefix(url, prefix)
    prefix = unique_prefix("replay-exec")
    try:
        out.rows.append(await reexecution(url, prefix, small, settings.rounds))
    finally:
        await delete_prefix(url, prefix)
    out.notes.append(
        f"replay: re-execution measured on a {small:,}-event run (replay_run re-publishes "
        "inputs one at a time, so a 100,000-event re-execution would dominate the suite's "
        "time); the live rate is that run's own, built with 64 publishes in flight."
    )
    return out
