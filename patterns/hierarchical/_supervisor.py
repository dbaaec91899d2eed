"""Hierarchical: a tree of supervisors that delegate work down and roll results up.

::

    org = Hierarchy(
        Node("lead", "org.lead", children=[
            Team("frontend", "org.frontend.jobs"),          # e.g. an Orchestrator's job topic
            Node("backend-lead", "org.backend", children=[
                Team("api", "org.api.jobs"), Team("platform", "org.platform.jobs"),
            ], escalation=Escalation(retries=1, reroute={"api": "platform"})),
        ], route=split_feature),
        max_depth=3, max_fanout=4,
    )
    rt.add(*org.agents())
    result = await run.request(org.topic, Job(id="f1", goal="..."), timeout=org.timeout)

Every node speaks the coordinators' one protocol: it answers a :class:`Job` request with a
:class:`JobResult`, and so does every child. A :class:`Node` is a supervisor agent hosted
here; a :class:`Team` is anything already answering jobs on a topic — usually an
orchestrator-worker team, or another hierarchy.

A supervisor routes the job to its children (a rule ``route(job) -> [Delegation]`` or a
:class:`Router` such as :class:`ModelRouter`; by default every child gets the whole job),
sends the sub-jobs concurrently, and combines the children's results in delegation order
(a function or an :class:`Aggregator`, as for the orchestrator). A child that fails or does
not answer within its timeout is handled by the node's :class:`Escalation`: retried, then
rerouted to a sibling, then either reported in a partial result or escalated — the node
fails, and its parent's escalation decides in turn.

Steps journaled: ``hier.received``, ``hier.routed``, ``hier.delegated``, ``hier.child_done``,
``hier.child_failed``, ``hier.rerouted``, ``hier.escalated``, ``hier.combined``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentbus import (
    Agent,
    Context,
    DecodeError,
    HandlerSpec,
    Message,
    RemoteError,
    RequestTimeout,
    UsageError,
    handle,
)

from .ow_messages import Job, JobFailed, JobResult, TaskFailure, TaskResult, describe_failure
from .ow_model import ModelRouter
from .ow_steps import (
    AggregateFn,
    Aggregator,
    Delegation,
    RouteFn,
    Router,
    check_step,
    run_aggregate,
    run_concurrently,
)

__all__ = [
    "Delegation",
    "Escalation",
    "Hierarchy",
    "ModelRouter",
    "Node",
    "RouteFn",
    "Router",
    "Supervisor",
    "Team",
]

#: Seconds a derived node timeout adds on top of its children's, for routing and combining.
SLACK = 2.0


@dataclass(frozen=True)
class Team:
    """A leaf: whatever answers :class:`Job` requests on ``topic`` (often an Orchestrator).

    ``timeout`` is how long the parent waits for one answer.
    """

    name: str
    topic: str
    timeout: float = 60.0
    description: str = ""


@dataclass(frozen=True)
class Escalation:
    """What a node does when a child fails or times out.

    First it asks the same child again, ``retries`` more times. Then, if ``reroute`` maps the
    child to a sibling, it gives that sibling the work (with the same retries). If that
    fails too: ``on_failure="fail"`` fails this node, escalating to its parent;
    ``"report"`` carries on and lists the failure in a partial result.
    """

    retries: int = 1
    reroute: Mapping[str, str] = field(default_factory=dict)
    on_failure: Literal["fail", "report"] = "fail"


@dataclass(frozen=True)
class Node:
    """A supervisor: ``name`` (its agent name), ``topic`` (where it takes jobs), children.

    ``timeout`` is how long a parent waits for this node; by default it is derived from the
    children's timeouts and the escalation (the worst case of retries and reroutes).
    """

    name: str
    topic: str
    children: Sequence[Node | Team]
    route: RouteFn | Router | None = None
    combine: AggregateFn | Aggregator | None = None
    escalation: Escalation = field(default_factory=Escalation)
    timeout: float | None = None
    description: str = ""


class Hierarchy:
    """A validated tree of :class:`Node` supervisors over :class:`Team` leaves.

    ``max_depth`` bounds the levels below the root (a team under the root is at depth 1);
    ``max_fanout`` bounds each node's children and delegations per job. Raises
    :class:`UsageError` when the tree breaks a limit, a node has no children, names or
    topics collide, a reroute names no sibling, or a setting is out of range.
    """

    def __init__(self, root: Node, *, max_depth: int = 4, max_fanout: int = 8) -> None:
        if max_depth < 1 or max_fanout < 1:
            raise UsageError(
                f"max_depth and max_fanout must be at least 1, got {max_depth!r}, {max_fanout!r}"
            )
        self.root = root
        self.max_depth = max_depth
        self.max_fanout = max_fanout
        for path, _ in _paths(root, ()):
            if len(path) - 1 > max_depth:
                raise UsageError(
                    f"the hierarchy is {len(path) - 1} levels deep at {'/'.join(path)!r}; "
                    f"max_depth is {max_depth}"
                )
        nodes = list(_walk(root))  # after the depth check: a cyclic tree never gets here
        node_topics = {n.topic for n in nodes}
        for node in _walk(root):
            self._check_node(node)
            for team in node.children:
                if isinstance(team, Team):
                    self._check_team(team, node_topics)
        for label, values in (
            ("names", [n.name for n in nodes]),
            ("topics", [n.topic for n in nodes]),
        ):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise UsageError(f"supervisor {label} must be unique in a hierarchy: {repeated!r}")

    @staticmethod
    def _check_team(team: Team, node_topics: set[str]) -> None:
        handle(team.topic)  # validates the topic name now
        if team.topic in node_topics:
            raise UsageError(
                f"team {team.name!r} uses the topic of a supervisor ({team.topic!r}); "
                "put that Node in the tree instead, so depth and cycles can be checked"
            )
        if team.timeout <= 0:
            raise UsageError(f"team {team.name!r}: timeout must be positive, got {team.timeout!r}")

    def _check_node(self, node: Node) -> None:
        handle(node.topic)  # validates the topic name now
        names = [c.name for c in node.children]
        if not names:
            raise UsageError(f"supervisor {node.name!r} has no children")
        if len(names) > self.max_fanout:
            raise UsageError(
                f"supervisor {node.name!r} has {len(names)} children; max_fanout is {self.max_fanout}"
            )
        if len(set(names)) != len(names):
            raise UsageError(f"supervisor {node.name!r} has two children with one name: {names!r}")
        esc = node.escalation
        if esc.retries < 0 or esc.on_failure not in ("fail", "report"):
            raise UsageError(
                f"supervisor {node.name!r}: escalation needs retries >= 0 and on_failure "
                f"'fail' or 'report', got {esc.retries!r}, {esc.on_failure!r}"
            )
        for failed, alternate in esc.reroute.items():
            if failed not in names or alternate not in names or failed == alternate:
                raise UsageError(
                    f"supervisor {node.name!r}: reroute {failed!r} -> {alternate!r} must name "
                    f"two different children of {names!r}"
                )
        if node.timeout is not None and node.timeout <= 0:
            raise UsageError(f"supervisor {node.name!r}: timeout must be positive")
        if node.route is not None:
            check_step(node.route, "route", f"route of {node.name!r}")
        if node.combine is not None:
            check_step(node.combine, "aggregate", f"combine of {node.name!r}")

    @property
    def topic(self) -> str:
        """Where the root takes jobs."""
        return self.root.topic

    @property
    def timeout(self) -> float:
        """How long a requester of the root should wait at most (its derived budget)."""
        return budget(self.root)

    def agents(self) -> list[Supervisor]:
        """One :class:`Supervisor` agent per node, root first; host them in any runtimes."""
        return [
            Supervisor(
                node, height=_height(node), max_depth=self.max_depth, max_fanout=self.max_fanout
            )
            for node in _walk(self.root)
        ]


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
        self.children = {c.name: c for c in node.children}

    def handlers(self) -> list[tuple[HandlerSpec, tuple[type[Message], ...]]]:
        """The job handler on the node's topic, plus any declared with ``@handle``."""
        spec = HandlerSpec(self.node.topic, "on_job", "shared", (Job,), None, False, None, None)
        return [*super().handlers(), (spec, (Job,))]

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


def budget(child: Node | Team) -> float:
    """How long a parent waits for ``child``: its timeout, or the derived worst case."""
    if child.timeout is not None:
        return child.timeout
    assert isinstance(child, Node)
    tries = child.escalation.retries + 1
    by_name = {c.name: c for c in child.children}
    worst = 0.0
    for c in child.children:
        spent = tries * budget(c)
        alternate = child.escalation.reroute.get(c.name)
        if alternate is not None:
            spent += tries * budget(by_name[alternate])
        worst = max(worst, spent)
    return worst + SLACK


def _walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        if isinstance(child, Node):
            yield from _walk(child)


def _paths(
    node: Node | Team, above: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], Node | Team]]:
    path = (*above, node.name)
    yield path, node
    if isinstance(node, Node):
        for child in node.children:
            yield from _paths(child, path)


def _height(node: Node | Team) -> int:
    if isinstance(node, Team):
        return 0
    return 1 + max((_height(c) for c in node.children), default=0)
