"""Orchestrator-worker: plan a job into tasks, farm them out to competing workers, merge.

::

    team = Orchestrator(
        name="research-lead", topic="research.jobs", work_topic="research.tasks",
        plan=split_question,                 # plan(job) -> [Task], or ModelPlanner(model)
        aggregate=write_report,              # (job, results, failures) -> Summary, or ModelAggregator
        task_timeout=20, max_attempts=3, max_in_flight=4, failure_policy="best_effort",
    )
    researcher = worker(answer, topic="research.tasks", name="researcher")
    result = await run.request("research.jobs", Job(id="q1", goal="..."), expect=JobResult)

The orchestrator handles each :class:`Job` request on its topic: it plans the tasks, sends
each as a request to the work topic (workers of one name compete in one consumer group),
waits for each reply by correlation, re-dispatches a task whose worker failed or did not
answer within ``task_timeout`` (up to ``max_attempts`` dispatches), applies the failure
policy, aggregates the results in task order and replies with a :class:`JobResult`.

Every step is journaled as a ``step`` record (``ow.planned``, ``ow.dispatched``,
``ow.task_done``, ``ow.task_error``, ``ow.task_failed``, ``ow.aggregated``,
``ow.job_failed``), so ``agentbus trace`` shows the job's progress.
"""

from __future__ import annotations

from typing import Any

from ..common import (
    AggregateFn,
    Aggregator,
    Job,
    JobFailed,
    JobResult,
    ModelAggregator,
    ModelPlanner,
    PlanFn,
    Planner,
    Summary,
    Task,
    TaskFailure,
    TaskResult,
)
from ._orchestrator import FailurePolicy, Orchestrator
from ._worker import Worker, WorkFn, WorkOutput, worker

__all__ = [
    "AggregateFn",
    "Aggregator",
    "FailurePolicy",
    "Job",
    "JobFailed",
    "JobResult",
    "ModelAggregator",
    "ModelPlanner",
    "Orchestrator",
    "PlanFn",
    "Planner",
    "Summary",
    "Task",
    "TaskFailure",
    "TaskResult",
    "WorkFn",
    "WorkOutput",
    "Worker",
    "worker",
]


def __getattr__(name: str) -> Any:
    # ask_model journaled a request shape of its own; agents.call_model is now the one
    # journaled model call. Code written against it keeps importing for one release.
    if name == "ask_model":
        import warnings

        from agentbus.agents import call_model

        warnings.warn(
            "agentbus.patterns.orchestrator_worker.ask_model is deprecated: use agentbus.agents.call_model",
            DeprecationWarning,
            stacklevel=2,
        )
        return call_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
