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

from ..common import (
    AggregateFn,
    Aggregator,
    Child,
    Delegation,
    Job,
    JobFailed,
    JobResult,
    ModelAggregator,
    ModelRouter,
    RouteFn,
    Router,
    Summary,
    TaskFailure,
    TaskResult,
)
from ._hierarchy import Hierarchy
from ._supervisor import Supervisor
from ._tree import Escalation, Node, Team, budget

__all__ = [
    "AggregateFn",
    "Aggregator",
    "Child",
    "Delegation",
    "Escalation",
    "Hierarchy",
    "Job",
    "JobFailed",
    "JobResult",
    "ModelAggregator",
    "ModelRouter",
    "Node",
    "RouteFn",
    "Router",
    "Summary",
    "Supervisor",
    "TaskFailure",
    "TaskResult",
    "Team",
    "budget",
]
