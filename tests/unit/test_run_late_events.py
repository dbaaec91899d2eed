"""A run that ended keeps its status; work that outlives it is counted as late events."""

from __future__ import annotations

import asyncio

import pytest

from agentbus import Agent, Context, Message, RequestTimeout, Runtime, handle
from agentbus.testing import wait_for


class Ask(Message, type="late.Ask"):
    text: str


class Answer(Message, type="late.Answer"):
    text: str


class Note(Message, type="late.Note"):
    text: str


class Slow(Agent, name="slow"):
    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.done = asyncio.Event()

    @handle("late.ask")
    async def on_ask(self, msg: Ask, ctx: Context) -> Answer:
        await self.release.wait()
        await ctx.publish("late.notes", Note(text="finished anyway"))
        self.done.set()
        return Answer(text=msg.text)


async def test_a_failed_run_keeps_its_status_and_counts_what_came_after(url_for: str) -> None:
    slow = Slow()
    async with Runtime(url_for, block_ms=50) as rt:
        rt.add(slow)
        with pytest.raises(RequestTimeout):
            async with rt.run("impatient") as run:
                await run.request("late.ask", Ask(text="x"), timeout=0.2)
        info = await rt.journal.run(run.run_id)
        assert (info.status, info.events, info.late_events) == ("failed", 1, 0)
        assert info.meta["events_at_end"] == 1

        slow.release.set()  # the handler outlives the run: a note and a reply
        await asyncio.wait_for(slow.done.wait(), 5)

        async def counted() -> bool:
            return (await rt.journal.run(run.run_id)).events == 3

        await wait_for(counted, timeout=5)
        info = await rt.journal.run(run.run_id)
        assert info.status == "failed"
        assert info.late_events == 2
        assert info.to_dict()["late_events"] == 2
        [listed] = [r for r in await rt.journal.runs() if r.run_id == run.run_id]
        assert listed.late_events == 2


async def test_a_run_that_ends_after_its_work_has_no_late_events(url_for: str) -> None:
    slow = Slow()
    slow.release.set()
    async with Runtime(url_for, block_ms=50) as rt:
        rt.add(slow)
        async with rt.run("patient") as run:
            await run.request("late.ask", Ask(text="x"), expect=Answer)
        info = await rt.journal.run(run.run_id)
        assert (info.status, info.events, info.late_events) == ("completed", 3, 0)
