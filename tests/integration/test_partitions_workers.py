"""Per-key order across `agentbus worker` processes: a SIGKILL, a takeover, a rebalance.

Three workers share a topic of 8 partitions; one is killed mid-run (its partitions are
taken over once its lease runs out), a fourth joins later (a rebalance). Each handled
order is appended to a file; per key, the orders must come in publish order. Delivery is
at least once: what the killed worker handled but had not acknowledged is handled again
by the partition's next owner (before anything after it), so a key's log may go back to
an earlier order once, right where the killed worker's lines end, and never elsewhere.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio

from agentbus import Runtime
from agentbus.testing import wait_for
from agentbus.testing.workers import WorkerProcesses

pytestmark = [pytest.mark.redis, pytest.mark.slow]

HERE = Path(__file__).parent
APP = str(HERE / "partition_app.py") + ":app"
KEYS, PER_KEY = 40, 25
LEASE = ["--partition-lease", "1.5s"]
_spec = importlib.util.spec_from_file_location("partition_app", HERE / "partition_app.py")
assert _spec is not None
assert _spec.loader is not None
partition_app = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(partition_app)
Order = partition_app.Order


@pytest.fixture
def workers(redis_url: str, redis_prefix: str) -> Iterator[WorkerProcesses]:
    with WorkerProcesses(f"{redis_url}?prefix={redis_prefix}", APP) as w:
        yield w


def read_log(path: Path) -> list[tuple[str, int, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        key, seq, by = line.split()
        out.append((key, int(seq), by))
    return out


def check(log: list[tuple[str, int, str]], killed: str) -> int:
    """Assert per-key order (allowing the killed worker's unacknowledged tail to be
    handled again right after its last line); return how many lines were duplicates."""
    by_key: dict[str, list[tuple[int, str]]] = {}
    for key, seq, by in log:
        by_key.setdefault(key, []).append((seq, by))
    assert sorted(by_key) == sorted(f"k{n}" for n in range(KEYS))
    duplicates = 0
    for key, lines in by_key.items():
        first_seen = list(dict.fromkeys(seq for seq, _ in lines))
        assert first_seen == list(range(PER_KEY)), f"{key}: {lines}"  # none lost, in order
        seen: dict[int, str] = {}
        for i, (seq, by) in enumerate(lines):
            if i and seq != lines[i - 1][0] + 1:
                prev_seq, prev_by = lines[i - 1]
                # Going back happens only when the killed worker's partition passes on.
                assert seq <= prev_seq, f"{key}: {lines}"
                assert prev_by == killed != by, f"{key}: {lines}"
            if seq in seen:
                duplicates += 1
                assert seen[seq] == killed, f"{key}: {seq} handled twice by live workers"
            seen[seq] = by
    return duplicates


async def test_per_key_order_survives_a_sigkill_and_a_rebalance(
    workers: WorkerProcesses, tmp_path: Path
) -> None:
    path = tmp_path / "handled.log"
    env = {"PARTITION_LOG": str(path)}
    for name in ("w1", "w2", "w3"):
        await asyncio.to_thread(workers.start, consumer=name, extra=LEASE, env=env)
    rng = random.Random(4)
    async with Runtime(workers.url, journal=False) as rt:  # looks the partition count up
        killer: asyncio.Task[int] | None = None
        for seq in range(PER_KEY):
            keys = [f"k{n}" for n in range(KEYS)]
            rng.shuffle(keys)
            for key in keys:
                await rt.publish("pt.orders", Order(key=key, seq=seq), key=key)
            await asyncio.sleep(0.01)  # faster than handled: a backlog
            if seq == PER_KEY // 3:
                # Kill w2 the moment it has work in hand, while the publishing goes on
                # (waiting here instead would let w2 drain its backlog first).
                killer = asyncio.create_task(_kill_with_work_in_hand(rt, workers, path, "w2"))
            if seq == 2 * PER_KEY // 3:
                assert killer is not None
                in_hand = await killer
                assert in_hand > 0
                await asyncio.to_thread(workers.start, consumer="w4", extra=LEASE, env=env)

        def all_handled() -> bool:
            return len({(k, s) for k, s, _ in read_log(path)}) >= KEYS * PER_KEY

        await wait_for(all_handled, timeout=25, message="every order handled")
        await asyncio.sleep(0.5)  # a late duplicate would show up
        log = read_log(path)
        duplicates = check(log, killed="w2")
        handlers = {by for _, _, by in log}
        assert {"w1", "w2", "w3", "w4"} <= handlers  # w4 got a share after the rebalance
        # Lines after w2 died are the other workers': its partitions were taken over.
        assert duplicates <= 64  # at most what w2 held unacknowledged (concurrency)
        topics = {t.topic: t for t in await rt.transport.admin.topics()}
        for k in range(8):
            group = next(g for g in topics[f"pt.orders#{k}"].groups if g.name == "ledger")
            assert group.pending == 0, f"partition {k}: {group}"
    print(f"w2 had {in_hand} in hand; {len(log)} lines, {duplicates} handled again")


async def _kill_with_work_in_hand(
    rt: Runtime, workers: WorkerProcesses, path: Path, name: str
) -> int:
    """SIGKILL worker ``name`` once it has handled something and has entries in hand;
    return how many it had (0: it never had any within 10 s; not killed then)."""
    for _ in range(1000):
        handled = any(by == name for _, _, by in read_log(path))
        if handled and (in_hand := await _pending_of(rt, name)) > 0:
            workers.kill(name)  # mid-run: no shutdown, no acks, work in hand
            return in_hand
        await asyncio.sleep(0.01)
    return 0


async def _pending_of(rt: Runtime, consumer: str) -> int:
    """How many entries of the partitions ``consumer`` has read and not acknowledged."""
    r = redis.asyncio.Redis.from_url(rt.transport.url.partition("?")[0])
    try:
        total = 0
        for k in range(8):
            summary = await r.xpending(rt.transport.keys.topic(f"pt.orders#{k}"), "ledger")
            for row in summary["consumers"]:
                if row["name"] == consumer.encode():
                    total += int(row["pending"])
        return total
    finally:
        await r.aclose()
