"""What several patterns share: the job protocol, the user-supplied steps, model steps, views.

* The job protocol of the orchestrator-worker and hierarchical coordinators: a :class:`Job`
  request is answered with a :class:`JobResult` (or fails with :class:`JobFailed`); inside a
  team, a :class:`Task` is answered with a :class:`TaskResult`.
* The steps a user supplies to those coordinators — plain functions (:data:`PlanFn`,
  :data:`AggregateFn`, :data:`RouteFn`) or objects implementing :class:`Planner`,
  :class:`Aggregator` or :class:`Router` — and the model-backed ones
  (:class:`ModelPlanner`, :class:`ModelAggregator`, :class:`ModelRouter`).
* :class:`SequencedView`: the per-run, gap-free fold a blackboard source keeps of its board
  and a market bidder of its ledger.

Each pattern's package re-exports the names its users need, so applications import from
the pattern (``from patterns.orchestrator_worker import Task``); this package is where the
pattern packages import them from.
"""

from __future__ import annotations

from ._messages import (
    Job,
    JobFailed,
    JobResult,
    Summary,
    Task,
    TaskFailure,
    TaskResult,
    describe_failure,
)
from ._model import ModelAggregator, ModelPlanner, ModelRouter, model_label
from ._steps import (
    AggregateFn,
    Aggregator,
    Child,
    Delegation,
    PlanFn,
    Planner,
    RouteFn,
    Router,
    check_step,
    join_results,
    run_aggregate,
    run_concurrently,
    run_plan,
)
from ._view import SequencedView, StaleView

__all__ = [
    "AggregateFn",
    "Aggregator",
    "Child",
    "Delegation",
    "Job",
    "JobFailed",
    "JobResult",
    "ModelAggregator",
    "ModelPlanner",
    "ModelRouter",
    "PlanFn",
    "Planner",
    "RouteFn",
    "Router",
    "SequencedView",
    "StaleView",
    "Summary",
    "Task",
    "TaskFailure",
    "TaskResult",
    "check_step",
    "describe_failure",
    "join_results",
    "model_label",
    "run_aggregate",
    "run_concurrently",
    "run_plan",
]
