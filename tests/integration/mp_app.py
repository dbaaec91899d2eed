"""A tiny app hosted by `agentbus worker` subprocesses in the multi-process tests."""

from __future__ import annotations

import asyncio

from agentbus import Agent, App, Context, Message, handle


class Job(Message, type="mp.Job"):
    n: int
    sleep: float = 0.0


class Done(Message, type="mp.Done"):
    n: int
    by: str


class Crunch(Agent, name="crunch"):
    @handle("mp.jobs", output="mp.done")
    async def work(self, job: Job, ctx: Context) -> Done:
        if job.sleep:
            await asyncio.sleep(job.sleep)
        return Done(n=job.n, by=ctx.runtime.consumer)


class Listener(Agent, name="listener"):
    @handle("mp.announce", mode="broadcast", output="mp.heard")
    async def hear(self, job: Job, ctx: Context) -> Done:
        return Done(n=job.n, by=ctx.runtime.consumer)


app = App("mp", [Crunch, Listener])
