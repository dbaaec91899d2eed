"""Several `agentbus worker` processes on one Redis: sharing, broadcast, crash recovery."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentbus import Envelope, Runtime
from agentbus.testing import wait_for
from agentbus.testing.workers import WorkerProcesses
from agentbus.transports import Transport

pytestmark = [pytest.mark.redis, pytest.mark.slow]

APP = str(Path(__file__).with_name("mp_app.py")) + ":app"
_spec = importlib.util.spec_from_file_location("mp_app", Path(__file__).with_name("mp_app.py"))
assert _spec is not None
assert _spec.loader is not None
mp_app = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mp_app)
Job = mp_app.Job
Done = mp_app.Done


@pytest.fixture
def workers(redis_url: str, redis_prefix: str) -> Iterator[WorkerProcesses]:
    with WorkerProcesses(f"{redis_url}?prefix={redis_prefix}", APP) as w:
        yield w


async def _results(transport: Transport, topic: str) -> list[Any]:
    entries = await transport.read_tail(topic, "0-0", count=100_000, block_ms=None)
    return [Done.model_validate(Envelope.decode(d.payload or b"").data) for d in entries]


async def test_two_workers_share_the_work_and_handle_each_message_once(
    workers: WorkerProcesses,
) -> None:
    workers.start(consumer="w1")
    workers.start(consumer="w2")
    async with Runtime(workers.url) as rt:
        async with rt.run("share") as run:
            for n in range(100):
                await run.publish("mp.jobs", Job(n=n, sleep=0.01))

        async def all_done() -> bool:
            return len(await _results(rt.transport, "mp.done")) >= 100

        await wait_for(all_done, timeout=30, message="100 results")
        await asyncio.sleep(0.3)  # let any duplicate (there must be none) show up
        done = await _results(rt.transport, "mp.done")
        assert sorted(d.n for d in done) == list(range(100))  # every one, exactly once
        assert {d.by for d in done} == {"w1", "w2"}  # both replicas took a share
        topics = {t.topic: t for t in await rt.transport.admin.topics()}
        group = next(g for g in topics["mp.jobs"].groups if g.name == "crunch")
        assert group.pending == 0
        assert group.lag == 0
        records = await rt.journal.records(run.run_id)
        handled = [r for r in records if r.kind == "handled" and r.record["agent"] == "crunch"]
        assert len(handled) == 100


async def test_broadcast_reaches_every_worker(workers: WorkerProcesses) -> None:
    workers.start(consumer="w1")
    workers.start(consumer="w2")
    async with Runtime(workers.url) as rt:
        async with rt.run("broadcast") as run:
            for n in range(5):
                await run.publish("mp.announce", Job(n=n))

        async def heard_by_both() -> bool:
            return len(await _results(rt.transport, "mp.heard")) >= 10

        await wait_for(heard_by_both, timeout=20, message="10 broadcast replies")
        heard = await _results(rt.transport, "mp.heard")
        assert sorted((d.by, d.n) for d in heard) == sorted(
            (w, n) for w in ("w1", "w2") for n in range(5)
        )


async def test_killed_worker_pending_messages_are_claimed_by_the_survivor(
    workers: WorkerProcesses,
) -> None:
    opts = ("--visibility-timeout", "1.0", "--concurrency", "4")
    victim = workers.start(consumer="victim", extra=opts)
    async with Runtime(workers.url) as rt:
        async with rt.run("crash") as run:
            for n in range(30):
                await run.publish("mp.jobs", Job(n=n, sleep=0.3))

        async def victim_busy() -> bool:
            done = await _results(rt.transport, "mp.done")
            return sum(d.by == "victim" for d in done) >= 4

        await wait_for(victim_busy, timeout=20, message="the victim handled a few jobs")

        async def pending() -> int:
            topics = {t.topic: t for t in await rt.transport.admin.topics()}
            return next(g for g in topics["mp.jobs"].groups if g.name == "crunch").pending

        # Kill it mid-handler. Freeze it first and look: between its acks landing and its
        # next read it can hold nothing, and a kill right then would strand nothing.
        for _ in range(50):
            victim.send_signal(signal.SIGSTOP)
            await asyncio.sleep(0.05)  # let bytes it already sent reach Redis
            if await pending() > 0:
                break
            victim.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        stranded = await pending()
        assert stranded > 0, "the victim should have died with unacknowledged jobs"

        workers.start(consumer="survivor", extra=opts)

        async def all_done() -> bool:
            return {d.n for d in await _results(rt.transport, "mp.done")} == set(range(30))

        await wait_for(all_done, timeout=60, message="all 30 jobs handled after the crash")

        # A handler's result is published before its ack lands (acks are batched), so
        # the last acks may still be on their way when the last result is seen.
        async def acked() -> bool:
            return await pending() == 0

        await wait_for(acked, timeout=10, message="every job acknowledged")
        records = await rt.journal.records(run.run_id)
        redelivered = [
            r
            for r in records
            if r.kind == "delivered"
            and r.record.get("consumer") == "survivor"
            and r.record.get("attempt", 1) >= 2
        ]
        assert len(redelivered) >= stranded  # the stranded jobs were claimed, not lost
