"""The user-supplied steps of a coordinator: planning a job and aggregating its results.

Each step is either a plain function or an object with an ``async`` method that also gets
the handler's :class:`~agentbus.Context` (for model and tool calls through ``ctx.invoke``,
which journals them and substitutes them on replay)::

    def plan(job: Job) -> list[Task]                          # sync or async
    class Planner: async def plan(self, job, ctx) -> list[Task]

    def aggregate(job, results, failures) -> Summary | str     # sync or async
    class Aggregator: async def aggregate(self, job, results, failures, ctx) -> Summary

    def route(job) -> list[Delegation]                         # hierarchical; sync or async
    class Router: async def route(self, job, children, ctx) -> list[Delegation]
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

from agentbus import Context, UsageError

from ._messages import Job, JobFailed, Summary, Task, TaskFailure, TaskResult

__all__ = [
    "AggregateFn",
    "Aggregator",
    "Child",
    "Delegation",
    "PlanFn",
    "Planner",
    "RouteFn",
    "Router",
    "check_step",
    "join_results",
    "run_aggregate",
    "run_concurrently",
    "run_plan",
]


@runtime_checkable
class Planner(Protocol):
    """Splits a job into tasks, with the context at hand (e.g. :class:`ModelPlanner`)."""

    async def plan(self, job: Job, ctx: Context) -> Sequence[Task]:
        """The tasks for ``job``, in the order results should be presented."""
        ...


@runtime_checkable
class Aggregator(Protocol):
    """Merges task results into the job's answer (e.g. :class:`ModelAggregator`)."""

    async def aggregate(
        self, job: Job, results: list[TaskResult], failures: list[TaskFailure], ctx: Context
    ) -> Summary:
        """The merged answer; ``results`` are ordered by task index."""
        ...


@dataclass(frozen=True)
class Delegation:
    """A routing decision: send ``goal`` (and ``data``) to the child named ``child``."""

    child: str
    goal: str
    data: dict[str, Any] = field(default_factory=dict)


class Child(Protocol):
    """What a router knows of a child: its name and what it is for."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...


@runtime_checkable
class Router(Protocol):
    """Routes a job to children with the context at hand (e.g. :class:`ModelRouter`)."""

    async def route(
        self, job: Job, children: Sequence[Child], ctx: Context
    ) -> Sequence[Delegation]:
        """The delegations for ``job``, in the order results should be rolled up."""
        ...


RouteFn: TypeAlias = Callable[[Job], Sequence[Delegation] | Awaitable[Sequence[Delegation]]]
PlanFn: TypeAlias = Callable[[Job], Sequence[Task] | Awaitable[Sequence[Task]]]
AggregateFn: TypeAlias = Callable[
    [Job, list[TaskResult], list[TaskFailure]], Summary | str | Awaitable[Summary | str]
]


def check_step(step: object, method: str, what: str) -> None:
    """Raise :class:`UsageError` unless ``step`` is a callable or has an async ``method``."""
    bound = getattr(step, method, None)
    if bound is not None and inspect.iscoroutinefunction(bound):
        return
    if callable(step) and not isinstance(step, type):
        return
    raise UsageError(
        f"{what} must be a function or an object with an 'async def {method}(...)' method, "
        f"got {step!r}"
    )


async def run_plan(plan: PlanFn | Planner, job: Job, ctx: Context) -> list[Task]:
    """Call ``plan`` in whichever form it has; returns the tasks as a list.

    Raises ``TypeError`` when the plan holds anything but :class:`Task` objects.
    """
    if isinstance(plan, Planner):
        tasks = list(await plan.plan(job, ctx))
    else:
        out = plan(job)
        if inspect.isawaitable(out):
            out = await out
        tasks = list(out)
    wrong = [t for t in tasks if not isinstance(t, Task)]
    if wrong:
        raise TypeError(f"a plan must be a list of Task objects, got {wrong[0]!r}")
    return tasks


async def run_aggregate(
    aggregate: AggregateFn | Aggregator | None,
    job: Job,
    results: list[TaskResult],
    failures: list[TaskFailure],
    ctx: Context,
) -> Summary:
    """Call ``aggregate`` in whichever form it has (``None`` joins the result texts)."""
    if aggregate is None:
        return join_results(job, results, failures)
    if isinstance(aggregate, Aggregator):
        return await aggregate.aggregate(job, results, failures, ctx)
    out = aggregate(job, results, failures)
    if inspect.isawaitable(out):
        out = await out
    if isinstance(out, str):
        return Summary(text=out)
    if not isinstance(out, Summary):
        raise TypeError(f"an aggregate function must return a Summary or a str, got {out!r}")
    return out


def join_results(job: Job, results: list[TaskResult], failures: list[TaskFailure]) -> Summary:
    """The default aggregation: each result's text under its title, in task order."""
    sections = [(r.index, f"## {r.title}\n{r.text}".rstrip()) for r in results]
    sections += [(f.index, f"## {f.title}\n(failed: {f.error})") for f in failures]
    text = "\n\n".join(section for _, section in sorted(sections))
    return Summary(text=text, produced_by="join_results")


async def run_concurrently(branches: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run ``branches`` concurrently; the first :class:`JobFailed` cancels the others.

    The failure is raised as itself (of several at once, the one naming the lowest task
    index), not wrapped in an exception group, so the requester reads a plain reason.
    """
    try:
        async with asyncio.TaskGroup() as group:
            for branch in branches:
                group.create_task(branch)
    except BaseExceptionGroup as eg:
        failed = [e for e in eg.exceptions if isinstance(e, JobFailed)]
        if failed:
            raise min(failed, key=lambda e: e.failures[0].index if e.failures else -1) from None
        if len(eg.exceptions) == 1:
            raise eg.exceptions[0] from None
        raise
