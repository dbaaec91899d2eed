"""The messages the orchestrator-worker and hierarchical coordinators exchange.

Both coordinators speak one protocol: a :class:`Job` request is answered with a
:class:`JobResult`. That is what lets a supervisor delegate to an orchestrator-worker team,
or to another supervisor, without knowing which it is. Inside a team, the orchestrator
sends each :class:`Task` as a request to the work topic and a worker answers with a
:class:`TaskResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from agentbus import Message, Reject

_M = TypeVar("_M", bound=BaseModel)

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
    """A short name for the task (results keep it)."""
    text: str = ""
    """What to do, in words."""
    data: dict[str, Any] = Field(default_factory=dict)
    """Structured inputs."""
    key: str | None = None
    """Tasks sharing a key run one at a time, in plan order (``None``: no lane)."""
    job_id: str = ""
    """The job it is part of (filled by the orchestrator)."""
    index: int = 0
    """Its position in the plan (filled by the orchestrator)."""
    attempt: int = 1
    """1 for the first dispatch, 2 for the next... (filled by the orchestrator)."""


class TaskResult(Message, type="patterns.TaskResult"):
    """A worker's answer to one task (or, in a hierarchy, a child's rolled-up answer)."""

    job_id: str = ""
    """The job the task belongs to."""
    index: int = 0
    """The task's position in the plan; results are ordered by it."""
    title: str = ""
    """The task's title (in a hierarchy: the child's name)."""
    text: str = ""
    """The answer in words (what a worker's ``str`` becomes)."""
    data: dict[str, Any] = Field(default_factory=dict)
    """The answer as data (what a worker's ``dict`` becomes)."""
    worker: str = ""
    """The worker (or child) that produced it."""
    attempt: int = 1
    """The dispatch that succeeded."""

    def data_as(self, model: type[_M]) -> _M:
        """``data`` as an instance of ``model`` (a worker's structured output, typed).

        Raises pydantic's ``ValidationError`` when the data does not fit ``model``.
        """
        return model.model_validate(self.data)


class TaskFailure(Message, type="patterns.TaskFailure"):
    """A task (or child) that did not succeed within its attempts, and the last error."""

    index: int
    """The task's position in the plan."""
    title: str
    """The task's title."""
    error: str
    """The last error, as ``Type: message``."""
    attempts: int
    """How many dispatches were made."""


class JobResult(Message, type="patterns.JobResult"):
    """The answer to a :class:`Job`.

    ``status`` is ``"completed"`` when every task succeeded and ``"partial"`` when the
    best-effort policy carried on past failures, which are listed in ``failures``.
    ``results`` are ordered by task index, never by arrival. ``produced_by`` says what wrote
    ``text`` (a function, or which model), so readers know what they are looking at.
    """

    job_id: str
    """The ``id`` of the :class:`Job`."""
    status: Literal["completed", "partial"]
    """``completed``, or ``partial`` when a best-effort job carried on past failures."""
    text: str
    """The aggregated answer."""
    data: dict[str, Any] = Field(default_factory=dict)
    """The aggregated structured answer."""
    produced_by: str = ""
    """What wrote ``text``: ``join_results``, a function's label or ``model:NAME``."""
    results: list[TaskResult] = Field(default_factory=list)
    """Every successful task's result, by task index."""
    failures: list[TaskFailure] = Field(default_factory=list)
    """Every task that failed (only in ``partial`` results)."""


@dataclass(frozen=True, slots=True)
class Summary:
    """What an aggregator returns: the merged text, structured data, and who wrote it."""

    text: str
    """The merged answer; becomes ``JobResult.text``."""
    data: dict[str, Any] = field(default_factory=dict)
    """Structured data; becomes ``JobResult.data``."""
    produced_by: str = "function"
    """A label for what merged it; becomes ``JobResult.produced_by``."""


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
