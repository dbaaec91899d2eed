"""A synthetic workflow big enough to load-test the HTML trace (``agentbus run`` this file).

A dispatcher plans each job, dispatches its parts to workers and awards a reviewer with a
reason, noting every step; one worker fails some parts for good (failed, dead-lettered).
``JOBS`` jobs of ``PARTS`` parts make about 2,000 events in one run on the embedded store.
"""

from __future__ import annotations

import asyncio
import os

from agentbus import Agent, App, Context, Message, Run, handle

JOBS = int(os.environ.get("TRACE_LOAD_JOBS", "172"))
PARTS = 4
WORKERS = ("drafter", "checker")


class Job(Message, type="load.Job"):
    id: str
    parts: int


class Part(Message, type="load.Part"):
    job_id: str
    index: int


class PartDone(Message, type="load.PartDone"):
    job_id: str
    index: int
    by: str


class Review(Message, type="load.Review"):
    job_id: str


class Verdict(Message, type="load.Verdict"):
    job_id: str
    ok: bool


class Dispatcher(Agent, name="dispatcher"):
    """Plans a job, dispatches its parts, awards the review to the cheaper reviewer."""

    @handle("load.jobs")
    async def run_job(self, job: Job, ctx: Context) -> Verdict:
        await ctx.note("plan", job_id=job.id, parts=job.parts, reason="one part per section")
        for i in range(job.parts):
            worker = WORKERS[i % len(WORKERS)]
            await ctx.note("dispatch", job_id=job.id, index=i, to=worker)
            await ctx.publish(f"load.{worker}", Part(job_id=job.id, index=i), key=job.id)
        winner = "reviewer-a" if int(job.id[1:]) % 3 else "reviewer-b"
        await ctx.note("award", job_id=job.id, winner=winner, reason=f"lowest quote for {job.id}")
        verdict: Verdict = await ctx.request(
            f"load.{winner}", Review(job_id=job.id), expect=Verdict, timeout=30
        )
        return verdict


class Drafter(Agent, name="drafter"):
    @handle("load.drafter")
    async def work(self, part: Part, ctx: Context) -> None:
        await ctx.publish("load.done", PartDone(job_id=part.job_id, index=part.index, by="drafter"))


class Checker(Agent, name="checker"):
    """Fails every fifth job's parts for good (one attempt, then the dead-letter stream)."""

    @handle("load.checker", max_attempts=1)
    async def work(self, part: Part, ctx: Context) -> None:
        if int(part.job_id[1:]) % 5 == 0:
            raise RuntimeError(f"checker cannot read part {part.index} of {part.job_id}")
        await ctx.publish("load.done", PartDone(job_id=part.job_id, index=part.index, by="checker"))


class Collector(Agent, name="collector"):
    @handle("load.done")
    async def collect(self, done: PartDone, ctx: Context) -> None:
        return None


class ReviewerA(Agent, name="reviewer-a"):
    @handle("load.reviewer-a")
    async def review(self, review: Review, ctx: Context) -> Verdict:
        return Verdict(job_id=review.job_id, ok=True)


class ReviewerB(Agent, name="reviewer-b"):
    @handle("load.reviewer-b")
    async def review(self, review: Review, ctx: Context) -> Verdict:
        return Verdict(job_id=review.job_id, ok=False)


app = App("trace-load", [Dispatcher, Drafter, Checker, Collector, ReviewerA, ReviewerB])


@app.main
async def main(run: Run) -> None:
    jobs = [Job(id=f"J{i}", parts=PARTS) for i in range(1, JOBS + 1)]
    for start in range(0, len(jobs), 20):  # in waves, to keep the in-flight count modest
        await asyncio.gather(
            *(
                run.request("load.jobs", j, expect=Verdict, timeout=60)
                for j in jobs[start : start + 20]
            )
        )
