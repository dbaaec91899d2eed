"""The orchestrator: plans a job into tasks, dispatches them to workers, aggregates."""

from __future__ import annotations

import asyncio
from typing import Literal

from agentbus import Agent, Context, DecodeError, RemoteError, RequestTimeout, UsageError, handle

from ..common import (
    AggregateFn,
    Aggregator,
    Job,
    JobFailed,
    JobResult,
    PlanFn,
    Planner,
    Task,
    TaskFailure,
    TaskResult,
    check_step,
    describe_failure,
    run_aggregate,
    run_concurrently,
    run_plan,
)

__all__ = ["FailurePolicy", "Orchestrator"]

FailurePolicy = Literal["fail_fast", "best_effort"]
_POLICIES = ("fail_fast", "best_effort")


class Orchestrator(Agent, name="orchestrator"):
    """Plans :class:`Job` requests on ``topic`` into tasks for the workers on ``work_topic``.

    ``plan`` is a function ``plan(job) -> list[Task]`` (sync or async) or a :class:`Planner`
    such as :class:`ModelPlanner`; ``aggregate`` is a function ``(job, results, failures) ->
    Summary | str`` or an :class:`Aggregator` such as :class:`ModelAggregator` (default:
    the result texts joined under their titles).

    Each dispatch waits ``task_timeout`` seconds for a worker's reply; a timeout or a
    worker's error re-dispatches the task, up to ``max_attempts`` dispatches in all. At most
    ``max_in_flight`` tasks of one job are out at once; tasks with the same ``key`` go one at
    a time, in plan order, and carry it as their partition key. ``failure_policy``
    ``"fail_fast"`` fails the job (:class:`JobFailed`, naming the task) at the first task
    that used up its attempts and abandons the rest; ``"best_effort"`` aggregates what
    succeeded and reports the failures (status ``"partial"``), failing only if nothing
    succeeded. A plan with no tasks or more than ``max_tasks`` fails the job.

    When a job arrives as a plain event rather than a request, the result is published to
    ``result_topic`` (if given). Raises :class:`UsageError` for a bad setting.
    """

    def __init__(
        self,
        *,
        topic: str,
        work_topic: str,
        plan: PlanFn | Planner,
        aggregate: AggregateFn | Aggregator | None = None,
        name: str | None = None,
        task_timeout: float = 30.0,
        max_attempts: int = 3,
        max_in_flight: int = 8,
        failure_policy: FailurePolicy = "fail_fast",
        max_tasks: int = 100,
        result_topic: str | None = None,
    ) -> None:
        for t in (topic, work_topic, *([result_topic] if result_topic else [])):
            handle(t)  # validates the topic name now, at configuration time
        if topic == work_topic:
            raise UsageError(f"the job topic and the work topic must differ, both are {topic!r}")
        if task_timeout <= 0:
            raise UsageError(f"task_timeout must be positive, got {task_timeout!r}")
        for label, value in (
            ("max_attempts", max_attempts),
            ("max_in_flight", max_in_flight),
            ("max_tasks", max_tasks),
        ):
            if value < 1:
                raise UsageError(f"{label} must be at least 1, got {value!r}")
        if failure_policy not in _POLICIES:
            raise UsageError(f"failure_policy must be one of {_POLICIES}, got {failure_policy!r}")
        check_step(plan, "plan", "plan")
        if aggregate is not None:
            check_step(aggregate, "aggregate", "aggregate")
        super().__init__(name=name)
        self.topic = topic
        self.work_topic = work_topic
        self.plan = plan
        self.aggregate = aggregate
        self.task_timeout = task_timeout
        self.max_attempts = max_attempts
        self.max_in_flight = max_in_flight
        self.failure_policy: FailurePolicy = failure_policy
        self.max_tasks = max_tasks
        self.result_topic = result_topic
        self.bind(topic, self.on_job, message=Job, output=result_topic)

    async def on_job(self, job: Job, ctx: Context) -> JobResult:
        """Run ``job`` to its result. Raises :class:`JobFailed` when it cannot complete."""
        await ctx.note("ow.job_received", job_id=job.id, goal=job.goal, delivery=ctx.attempt)
        try:
            return await self._run(job, ctx)
        except JobFailed as exc:
            await ctx.note("ow.job_failed", job_id=job.id, reason=exc.reason)
            raise

    async def _run(self, job: Job, ctx: Context) -> JobResult:
        tasks = await run_plan(self.plan, job, ctx)
        if not tasks:
            raise JobFailed(job.id, "the planner returned no tasks")
        if len(tasks) > self.max_tasks:
            raise JobFailed(
                job.id, f"the planner returned {len(tasks)} tasks; max_tasks is {self.max_tasks}"
            )
        tasks = [
            t.model_copy(update={"job_id": job.id, "index": i, "attempt": 1})
            for i, t in enumerate(tasks)
        ]
        await ctx.note(
            "ow.planned",
            job_id=job.id,
            tasks=[{"index": t.index, "title": t.title, "key": t.key} for t in tasks],
        )
        outcomes = await self._dispatch_all(job, tasks, ctx)
        results = [o for o in outcomes if isinstance(o, TaskResult)]
        failures = [o for o in outcomes if isinstance(o, TaskFailure)]
        if not results:
            raise JobFailed(
                job.id, "every task failed; " + "; ".join(map(describe_failure, failures)), failures
            )
        summary = await run_aggregate(self.aggregate, job, results, failures, ctx)
        status: Literal["completed", "partial"] = "partial" if failures else "completed"
        await ctx.note(
            "ow.aggregated",
            job_id=job.id,
            status=status,
            produced_by=summary.produced_by,
            succeeded=len(results),
            failed=len(failures),
        )
        return JobResult(
            job_id=job.id,
            status=status,
            text=summary.text,
            data=summary.data,
            produced_by=summary.produced_by,
            results=results,
            failures=failures,
        )

    async def _dispatch_all(
        self, job: Job, tasks: list[Task], ctx: Context
    ) -> list[TaskResult | TaskFailure]:
        # Tasks sharing a key form a lane that runs in plan order; the others get a lane
        # each. Lanes run concurrently, bounded by the semaphore.
        lanes: dict[str, list[Task]] = {}
        for t in tasks:
            lanes.setdefault(f"key:{t.key}" if t.key is not None else f"#{t.index}", []).append(t)
        slots = asyncio.Semaphore(self.max_in_flight)
        outcomes: dict[int, TaskResult | TaskFailure] = {}

        async def run_lane(lane: list[Task]) -> None:
            for t in lane:
                outcome = await self._run_task(t, slots, ctx)
                outcomes[t.index] = outcome
                await ctx.note(
                    "ow.progress",
                    job_id=job.id,
                    finished=len(outcomes),
                    failed=sum(isinstance(o, TaskFailure) for o in outcomes.values()),
                    total=len(tasks),
                )
                if isinstance(outcome, TaskFailure) and self.failure_policy == "fail_fast":
                    raise JobFailed(job.id, describe_failure(outcome), [outcome])

        await run_concurrently(run_lane(lane) for lane in lanes.values())
        return [outcomes[t.index] for t in tasks]

    async def _run_task(
        self, task: Task, slots: asyncio.Semaphore, ctx: Context
    ) -> TaskResult | TaskFailure:
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            sent = task.model_copy(update={"attempt": attempt})
            async with slots:
                await ctx.note(
                    "ow.dispatched",
                    job_id=task.job_id,
                    index=task.index,
                    title=task.title,
                    attempt=attempt,
                    key=task.key,
                )
                try:
                    reply: TaskResult = await ctx.request(
                        self.work_topic,
                        sent,
                        timeout=self.task_timeout,
                        expect=TaskResult,
                        key=task.key,
                    )
                except (RequestTimeout, RemoteError, DecodeError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    await ctx.note(
                        "ow.task_error",
                        job_id=task.job_id,
                        index=task.index,
                        attempt=attempt,
                        error=error,
                        next="re-dispatch" if attempt < self.max_attempts else "give up",
                    )
                    continue
            # The reply is matched by correlation id; pin the identifiers anyway, so a
            # worker that builds its own TaskResult cannot misplace it.
            result = reply.model_copy(
                update={
                    "job_id": task.job_id,
                    "index": task.index,
                    "title": task.title,
                    "attempt": attempt,
                }
            )
            await ctx.note(
                "ow.task_done",
                job_id=task.job_id,
                index=task.index,
                attempt=attempt,
                worker=result.worker,
            )
            return result
        failure = TaskFailure(
            index=task.index, title=task.title, error=error, attempts=self.max_attempts
        )
        await ctx.note(
            "ow.task_failed", job_id=task.job_id, index=task.index, error=describe_failure(failure)
        )
        return failure

    def __repr__(self) -> str:
        return f"<Orchestrator {self.name!r} {self.topic!r} -> {self.work_topic!r}>"
