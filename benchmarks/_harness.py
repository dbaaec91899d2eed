"""What every scenario shares: settings, rows, interleaved rounds, Redis helpers.

Every scenario measures agentbus and a baseline in the same run, interleaved
(A B A B …, at least five rounds), and reports medians. Each round checks its own
correctness (everything published was delivered once, nothing left pending) and raises
:class:`BenchError` when it was not, so a fast but wrong number is never reported.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from agentbus import Envelope, Message

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Body of every benchmark message: the encoded event is about 300 bytes.
BODY = "x" * 100
#: Publishes in flight at once (agentbus) and entries per pipeline/read (baselines).
WINDOW = 64


class BenchError(RuntimeError):
    """A scenario's correctness check failed (lost, duplicated or pending messages)."""


class Ping(Message, type="bench.Ping"):
    """The no-op message every throughput scenario sends."""

    seq: int
    body: str


def ping(seq: int) -> Ping:
    return Ping(seq=seq, body=BODY)


def ping_payload() -> bytes:
    """The bytes agentbus stores for one ``Ping``: baselines send exactly these."""
    env = Envelope.for_message(ping(0), source="client", runid="bench", topic="bench")
    return env.encode()


@dataclass
class Settings:
    """Command-line settings shared by all scenarios."""

    redis_url: str = DEFAULT_REDIS_URL
    rounds: int = 5
    quick: bool = False
    n: int | None = None

    def count(self, default: int, quick: int) -> int:
        """Messages per round: ``--n`` if given, else the scenario's default."""
        if self.n is not None:
            return self.n
        return quick if self.quick else default


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    measure: str
    agentbus: str
    baseline: str
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""

    def ratio_text(self) -> str:
        return "" if self.ratio is None else f"{self.ratio:.2f}"

    def met_text(self) -> str:
        return {None: "", True: "yes", False: "**no**"}[self.met]


@dataclass
class Outcome:
    """What one scenario produced: rows, free-text notes, and how long it took."""

    name: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


def unique_prefix(scenario: str) -> str:
    """A key prefix no one else uses: ``bench:<scenario>:<random>:``."""
    return f"bench:{scenario}:{uuid.uuid4().hex[:10]}:"


def with_prefix(url: str, prefix: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}prefix={prefix}"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0 to 100) by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ratios(a: Sequence[float], b: Sequence[float]) -> float:
    """Median of the per-round ratios a[i]/b[i] (pairs measured back to back)."""
    return median([x / y for x, y in zip(a, b, strict=True)])


Variant = tuple[str, Callable[[int], Awaitable[float]]]


async def interleave(
    rounds: int, variants: Sequence[Variant], *, warm_up: bool = True
) -> dict[str, list[float]]:
    """Run each variant once per round, in the same order every round (A B A B …).

    A variant takes the round number (``-1`` for the unrecorded warm-up round, run
    first unless ``warm_up`` is false) and returns its measurement.
    """
    if warm_up:
        for _, fn in variants:
            await fn(-1)
    out: dict[str, list[float]] = {name: [] for name, _ in variants}
    for r in range(rounds):
        for name, fn in variants:
            out[name].append(await fn(r))
    return out


def round_size(n: int, least: int) -> Callable[[int], int]:
    """Messages for round ``r``: ``n``, or a tenth of it (at least ``least``) to warm up."""
    warm = max(least, n // 10)
    return lambda r: warm if r < 0 else n


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


# -- Redis helpers ------------------------------------------------------------------------
def redis_client(url: str) -> Any:
    """A plain redis-py client (for baselines and checks), bytes in and out."""
    return aioredis.Redis.from_url(url, decode_responses=False)


async def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (never anything else, never FLUSHDB)."""
    r = redis_client(url)
    n = 0
    try:
        batch: list[bytes] = []
        async for key in r.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                n += await r.unlink(*batch)
                batch = []
        if batch:
            n += await r.unlink(*batch)
    finally:
        await r.aclose()
    return n


async def check_drained(
    url: str, stream: str, group: str, expected: int, delivered: int, what: str
) -> None:
    """Raise :class:`BenchError` unless ``expected`` entries were delivered once each
    and the group has nothing pending."""
    r = redis_client(url)
    try:
        length = await r.xlen(stream)
        pending = (await r.xpending(stream, group))["pending"]
    finally:
        await r.aclose()
    if delivered != expected or length != expected or pending:
        raise BenchError(
            f"{what}: published {expected}, stream holds {length}, handled {delivered}, "
            f"{pending} left pending"
        )


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``cond`` (cheaply) until true; raise :class:`BenchError` after ``timeout``."""
    deadline = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.001)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "no")
