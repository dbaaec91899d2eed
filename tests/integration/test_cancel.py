"""Cancelling a run: its handlers stop, its queued events are skipped, others go on.

Runs on the embedded transport and on a real Redis (the ``url_for`` fixture).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agentbus import Agent, Context, Message, RunCancelled, Runtime, handle
from agentbus.testing import wait_for


class Nap(Message, type="cx.Nap"):
    n: int


class Sleeper(Agent, name="cx-sleeper"):
    """Sleeps a minute on every job: only a cancel ends it early. One at a time."""

    concurrency = 1

    def __init__(self) -> None:
        super().__init__()
        self.started: list[tuple[str, int]] = []
        self.stopped: list[tuple[str, int, str]] = []

    @handle("cx.naps")
    async def nap(self, job: Nap, ctx: Context) -> None:
        run = ctx.run_id
        self.started.append((run, job.n))
        try:
            await asyncio.sleep(60 if job.n >= 0 else 0)
        except asyncio.CancelledError:
            self.stopped.append((run, job.n, "cancelled"))
            raise
        self.stopped.append((run, job.n, "completed"))


async def test_cancel_stops_handlers_and_skips_queued_events(url_for: str) -> None:
    sleeper = Sleeper()
    async with Runtime(url_for) as rt:
        rt.add(sleeper)
        run = rt.run("cancelled-one")
        await run.begin()
        for n in range(3):  # the first sleeps, two wait behind it (concurrency 1)
            await run.publish("cx.naps", Nap(n=n))
        await wait_for(lambda: len(sleeper.started) == 1, message="the first handler started")
        began = time.monotonic()
        assert await run.cancel(by="test") is True
        await wait_for(lambda: len(sleeper.stopped) == 1, message="the handler stopped")
        took = time.monotonic() - began
        assert sleeper.stopped == [(run.run_id, 0, "cancelled")]
        assert took < 1.0, took

        # Another run is untouched: its quick job is handled.
        other = rt.run("other")
        await other.begin()
        await other.publish("cx.naps", Nap(n=-1))
        await wait_for(lambda: (other.run_id, -1, "completed") in sleeper.stopped)
        await rt.idle()
        assert [s for s in sleeper.started if s[0] == run.run_id] == [(run.run_id, 0)]

        info = await rt.transport.store.get_run(run.run_id)
        assert info is not None
        assert info.status == "cancelled"
        assert info.ended is not None
        records = [r.record for r in await rt.transport.store.read_journal(run.run_id)]
        finished = [r for r in records if r["kind"] == "run_finished"]
        assert len(finished) == 1
        assert finished[0]["status"] == "cancelled"
        assert finished[0]["cancelled_by"] == "test"
        skipped = [r for r in records if r["kind"] == "ignored"]
        assert len(skipped) == 3  # the one in flight and the two queued
        assert {r["reason"] for r in skipped} == {"run cancelled"}
        assert not [r for r in records if r["kind"] in ("handled", "failed", "dead_lettered")]
        # Finishing the Run object afterwards keeps it cancelled.
        await run.finish("completed")
        info = await rt.transport.store.get_run(run.run_id)
        assert info is not None
        assert info.status == "cancelled"
        assert await run.cancel() is False  # already ended
        with pytest.raises(RunCancelled):
            await run.publish("cx.naps", Nap(n=9))


async def test_a_request_waiting_in_the_cancelled_run_ends(url_for: str) -> None:
    sleeper = Sleeper()
    async with Runtime(url_for) as rt:
        rt.add(sleeper)
        async with rt.run("asks") as run:
            asking = asyncio.ensure_future(run.request("cx.naps", Nap(n=1), timeout=30))
            await wait_for(lambda: len(sleeper.started) == 1)
            await run.cancel()
            with pytest.raises(RunCancelled):
                await asking
        info = await rt.transport.store.get_run(run.run_id)
        assert info is not None
        assert info.status == "cancelled"


async def test_cancel_of_an_unknown_run_raises(url_for: str) -> None:
    async with Runtime(url_for) as rt:
        with pytest.raises(KeyError):
            await rt.cancel_run("no-such-run")


class Flaky(Agent, name="cx-flaky"):
    """Fails every attempt: a cancel in the retry's backoff must stop the retries."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    @handle("cx.flaky")
    async def work(self, job: Nap, ctx: Context) -> None:
        self.attempts += 1
        raise RuntimeError("try again")


async def test_cancel_during_a_retry_backoff_stops_the_retries(url_for: str) -> None:
    flaky = Flaky()
    async with Runtime(url_for, retry_backoff=(0.5, 0.5)) as rt:
        rt.add(flaky)
        run = rt.run("flaky")
        await run.begin()
        await run.publish("cx.flaky", Nap(n=1))
        await wait_for(lambda: flaky.attempts == 1, message="the first attempt")
        await run.cancel()
        await rt.idle()
        assert flaky.attempts == 1
        records = [r.record for r in await rt.transport.store.read_journal(run.run_id)]
        assert [r["reason"] for r in records if r["kind"] == "ignored"] == ["run cancelled"]
        assert not [r for r in records if r["kind"] == "dead_lettered"]
