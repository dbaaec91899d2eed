"""The messages the orchestrator-worker and hierarchical coordinators exchange.

Both coordinators speak one protocol: a :class:`Job` request is answered with a
:class:`JobResult`. That is what lets a supervisor delegate to an orchestrator-worker team,
or to another supervisor, without knowing which it is. Inside a team, the orchestrator
sends each :class:`Task` as a request to the work topic and a worker answers with a
:class:`TaskResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from agentbus import Message, Reject

__all__ = ["Job", "JobFailed", "JobResult", "Summary", "Task", "TaskFailure", "TaskResult"]


class Job(Message, type="patterns.Job"):
    """A unit of work for a coordinator: a goal in words plus structured inputs.

    ``lineage`` names the supervisors the job came through (the hierarchical coordinator
    fills it), so a node can refuse a job that would go deeper than its limit or loop.
    """

    id: str
    goal: str
    data: dict[str, Any] = Field(default_factory=dict)
    lineage: list[str] = Field(default_factory=list)


class Task(Message, type="patterns.Task"):
    """One piece of a planned job, sent to the work topic.

    Planners set ``title``, ``text``, ``data`` and optionally ``key`` (tasks sharing a key
    run one at a time, in plan order); the orchestrator fills ``job_id``, ``index`` (the
    position in the plan) and ``attempt`` (1 for the first dispatch, 2 for the next...).
    """

    title: str
    text: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    key: str | None = None
    job_id: str = ""
    index: int = 0
    attempt: int = 1


class TaskResult(Message, type="patterns.TaskResult"):
    """A worker's answer to one task (or, in a hierarchy, a child's rolled-up answer)."""

    job_id: str = ""
    index: int = 0
    title: str = ""
    text: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    worker: str = ""
    attempt: int = 1


class TaskFailure(Message, type="patterns.TaskFailure"):
    """A task (or child) that did not succeed within its attempts, and the last error."""

    index: int
    title: str
    error: str
    attempts: int


class JobResult(Message, type="patterns.JobResult"):
    """The answer to a :class:`Job`.

    ``status`` is ``"completed"`` when every task succeeded and ``"partial"`` when the
    best-effort policy carried on past failures, which are listed in ``failures``.
    ``results`` are ordered by task index, never by arrival. ``produced_by`` says what wrote
    ``text`` (a function, or which model), so readers know what they are looking at.
    """

    job_id: str
    status: Literal["completed", "partial"]
    text: str
    data: dict[str, Any] = Field(default_factory=dict)
    produced_by: str = ""
    results: list[TaskResult] = Field(default_factory=list)
    failures: list[TaskFailure] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Summary:
    """What an aggregator returns: the merged text, structured data, and who wrote it."""

    text: str
    data: dict[str, Any] = field(default_factory=dict)
    produced_by: str = "function"


class JobFailed(Reject):
    """A coordinator gave up on a job; its requester receives it as a ``RemoteError``.

    A :class:`~agentbus.Reject`, so the runtime does not run the whole job again: the
    coordinator has already spent its retries. ``failures`` lists what failed.
    """

    def __init__(self, job_id: str, reason: str, failures: list[TaskFailure] | None = None) -> None:
        super().__init__(f"job {job_id!r} failed: {reason}")
        self.job_id = job_id
        self.reason = reason
        self.failures = list(failures or [])


def describe_failure(failure: TaskFailure) -> str:
    """One line naming a failed task, for error messages and notes."""
    return (
        f"task {failure.index} ({failure.title!r}) failed after {failure.attempts} "
        f"attempt{'s' if failure.attempts != 1 else ''}: {failure.error}"
    )
