"""The supervisor agent of one node: route, delegate, escalate, combine."""

from __future__ import annotations

import inspect
from typing import Any, Literal

from agentbus import Agent, Context, DecodeError, RemoteError, RequestTimeout

from ..common import (
    Delegation,
    Job,
    JobFailed,
    JobResult,
    Router,
    TaskFailure,
    TaskResult,
    describe_failure,
    run_aggregate,
    run_concurrently,
)
from ._tree import Node, Team, budget

__all__ = ["Supervisor"]


class Supervisor(Agent, name="supervisor"):
    """The agent of one :class:`Node`: takes :class:`Job` requests on the node's topic.

    Built by :meth:`Hierarchy.agents`. Fails a job (:class:`JobFailed`, which its requester
    receives as a ``RemoteError``) when it arrived through this node already (a loop), would
    go deeper than ``max_depth``, was routed to nothing, to an unknown child or to more than
    ``max_fanout`` children, or when a child failed and the escalation says ``"fail"``.
    """

    def __init__(self, node: Node, *, height: int, max_depth: int, max_fanout: int) -> None:
        super().__init__(name=node.name)
        self.node = node
        self.height = height
        self.max_depth = max_depth
        self.max_fanout = max_fanout
        self.children: dict[str, Node | Team] = {c.name: c for c in node.children}
        self.bind(node.topic, self.on_job, message=Job)

    async def on_job(self, job: Job, ctx: Context) -> JobResult:
        """Route ``job`` to the children, wait for them, combine. Raises :class:`JobFailed`."""
        await ctx.note("hier.received", job_id=job.id, node=self.name, lineage=job.lineage)
        try:
            return await self._run(job, ctx)
        except JobFailed as exc:
            await ctx.note("hier.escalated", job_id=job.id, node=self.name, reason=exc.reason)
            raise

    async def _run(self, job: Job, ctx: Context) -> JobResult:
        if self.name in job.lineage:
            raise JobFailed(
                job.id, f"it came through supervisor {self.name!r} already: {job.lineage!r}"
            )
        if len(job.lineage) + self.height > self.max_depth:
            raise JobFailed(
                job.id,
                f"it arrived {len(job.lineage)} levels down and {self.name!r} has "
                f"{self.height} more; max_depth is {self.max_depth}",
            )
        delegations = await self._route(job, ctx)
        await ctx.note(
            "hier.routed",
            job_id=job.id,
            delegations=[{"child": d.child, "goal": d.goal} for d in delegations],
        )
        outcomes: dict[int, tuple[TaskResult | TaskFailure, list[TaskFailure]]] = {}

        async def branch(index: int, delegation: Delegation) -> None:
            outcome = await self._delegate(job, index, delegation, ctx)
            outcomes[index] = outcome
            if isinstance(outcome[0], TaskFailure) and self.node.escalation.on_failure == "fail":
                raise JobFailed(job.id, f"child {describe_failure(outcome[0])}", [outcome[0]])

        await run_concurrently(branch(i, d) for i, d in enumerate(delegations))
        results: list[TaskResult] = []
        failures: list[TaskFailure] = []
        for index in range(len(delegations)):
            outcome, inherited = outcomes[index]
            if isinstance(outcome, TaskResult):
                results.append(outcome)
            else:
                failures.append(outcome)
            failures.extend(inherited)
        if not results:
            raise JobFailed(
                job.id,
                "every child failed; " + "; ".join(map(describe_failure, failures)),
                failures,
            )
        summary = await run_aggregate(self.node.combine, job, results, failures, ctx)
        status: Literal["completed", "partial"] = "partial" if failures else "completed"
        await ctx.note(
            "hier.combined",
            job_id=job.id,
            node=self.name,
            status=status,
            produced_by=summary.produced_by,
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

    async def _route(self, job: Job, ctx: Context) -> list[Delegation]:
        route = self.node.route
        if route is None:
            out: Any = [Delegation(c, job.goal, dict(job.data)) for c in self.children]
        elif isinstance(route, Router):
            out = await route.route(job, self.node.children, ctx)
        else:
            out = route(job)
            if inspect.isawaitable(out):
                out = await out
        delegations = list(out)
        wrong = [d for d in delegations if not isinstance(d, Delegation)]
        if wrong:
            raise TypeError(f"a route must return Delegation objects, got {wrong[0]!r}")
        if not delegations:
            raise JobFailed(job.id, f"supervisor {self.name!r} routed it to no child")
        if len(delegations) > self.max_fanout:
            raise JobFailed(
                job.id,
                f"supervisor {self.name!r} routed it to {len(delegations)} children; "
                f"max_fanout is {self.max_fanout}",
            )
        unknown = sorted({d.child for d in delegations} - set(self.children))
        if unknown:
            raise JobFailed(
                job.id,
                f"supervisor {self.name!r} routed it to unknown children {unknown!r}; "
                f"its children are {sorted(self.children)!r}",
            )
        return delegations

    async def _delegate(
        self, job: Job, index: int, delegation: Delegation, ctx: Context
    ) -> tuple[TaskResult | TaskFailure, list[TaskFailure]]:
        """Send one delegation, escalating per policy; returns its outcome and the child's
        own reported failures (which roll up with the result)."""
        escalation = self.node.escalation
        sub = Job(
            id=f"{job.id}/{index}.{delegation.child}",
            goal=delegation.goal,
            data=delegation.data,
            lineage=[*job.lineage, self.name],
        )
        targets = [delegation.child]
        if delegation.child in escalation.reroute:
            targets.append(escalation.reroute[delegation.child])
        attempts = 0
        error = ""
        for n, target in enumerate(targets):
            child = self.children[target]
            if n:
                await ctx.note("hier.rerouted", job_id=job.id, child=delegation.child, to=target)
            for attempt in range(1, escalation.retries + 2):
                attempts += 1
                await ctx.note(
                    "hier.delegated", job_id=job.id, sub_job=sub.id, child=target, attempt=attempts
                )
                try:
                    reply: JobResult = await ctx.request(
                        child.topic, sub, timeout=budget(child), expect=JobResult
                    )
                except (RequestTimeout, RemoteError, DecodeError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    if attempt <= escalation.retries:
                        step = "retry"
                    elif n + 1 < len(targets):
                        step = "reroute"
                    else:
                        step = escalation.on_failure  # "fail" escalates to our parent
                    await ctx.note(
                        "hier.child_failed",
                        job_id=job.id,
                        child=target,
                        attempt=attempts,
                        error=error,
                        next=step,
                    )
                    continue
                await ctx.note(
                    "hier.child_done",
                    job_id=job.id,
                    child=target,
                    attempt=attempts,
                    status=reply.status,
                )
                result = TaskResult(
                    job_id=job.id,
                    index=index,
                    title=delegation.child,
                    text=reply.text,
                    data=reply.data,
                    worker=target,
                    attempt=attempts,
                )
                inherited = [
                    f.model_copy(update={"index": index, "title": f"{delegation.child}/{f.title}"})
                    for f in reply.failures
                ]
                return result, inherited
        return TaskFailure(index=index, title=delegation.child, error=error, attempts=attempts), []
