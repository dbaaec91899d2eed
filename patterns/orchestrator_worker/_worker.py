"""Workers: the agents that compete for tasks on an orchestrator's work topic.

Subclass :class:`Worker` and implement :meth:`Worker.work`, or make one from a function
with :func:`worker`. All workers with one name form one consumer group on the topic, so
each task goes to exactly one of them; run more processes to add replicas.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from pydantic import BaseModel, ValidationError

from agentbus import Agent, Context, UsageError

from ..common import Task, TaskResult

__all__ = ["WorkFn", "WorkOutput", "Worker", "worker"]

WorkOutput: TypeAlias = TaskResult | str | dict[str, Any] | BaseModel
"""What a worker may return: a :class:`TaskResult`, a ``str`` (the result's ``text``), or
structured output as a ``dict`` or a pydantic model (a :class:`~agentbus.Message` too),
which becomes the result's ``data`` — checked against the worker's ``output`` model when it
has one. The worker fills in the task's job id, index, title and attempt."""
WorkFn: TypeAlias = Callable[[Task, Context], WorkOutput | Awaitable[WorkOutput]]
"""A worker function for :func:`worker`: ``fn(task, ctx)``, sync or async, returning a
:data:`WorkOutput`."""


class Worker(Agent, name="worker"):
    """Handles :class:`Task` requests on ``topic`` and answers with a :class:`TaskResult`.

    :meth:`work` may return a ``TaskResult``, a ``str`` (the result's text) or a ``dict``
    (its data); the worker fills in the task's job id, index, title and attempt. Raising
    fails this attempt: the orchestrator re-dispatches the task (``max_attempts`` is how
    many times the runtime itself tries the handler before replying with the error; the
    default 1 leaves retrying to the orchestrator, which may pick another replica).

    ``output`` (a pydantic model class) declares the shape of structured output: a
    ``dict`` or model the worker returns is validated against it, so a misspelt or missing
    field fails the task with the fields named instead of arriving as silently empty data;
    read it back typed with :meth:`TaskResult.data_as`.

    Raises :class:`UsageError` for a bad topic, ``max_attempts`` or ``output``.
    """

    def __init__(
        self,
        *,
        topic: str,
        name: str | None = None,
        max_attempts: int = 1,
        output: type[BaseModel] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise UsageError(f"max_attempts must be at least 1, got {max_attempts!r}")
        if output is not None and not (isinstance(output, type) and issubclass(output, BaseModel)):
            raise UsageError(f"output must be a pydantic model class, got {output!r}")
        super().__init__(name=name)
        self.topic = topic
        self.max_attempts = max_attempts
        self.output = output
        self.bind(topic, self.on_task, message=Task, max_attempts=max_attempts)

    async def on_task(self, task: Task, ctx: Context) -> TaskResult:
        """Do one task and wrap the output as its :class:`TaskResult`."""
        out = await self.work(task, ctx)
        return as_result(task, out, self.name, output=self.output)

    async def work(self, task: Task, ctx: Context) -> WorkOutput:
        """Do ``task``. Override this; the base class raises ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} must implement work(task, ctx)")


class _FunctionWorker(Worker):
    def __init__(
        self,
        fn: WorkFn,
        *,
        topic: str,
        name: str,
        max_attempts: int,
        output: type[BaseModel] | None,
    ) -> None:
        super().__init__(topic=topic, name=name, max_attempts=max_attempts, output=output)
        self.fn = fn

    async def work(self, task: Task, ctx: Context) -> WorkOutput:
        out = self.fn(task, ctx)
        if inspect.isawaitable(out):
            out = await out
        return out

    def __repr__(self) -> str:
        return (
            f"<worker {self.name!r} on {self.topic!r}: {getattr(self.fn, '__qualname__', self.fn)}>"
        )


def worker(
    fn: WorkFn,
    *,
    topic: str,
    name: str,
    max_attempts: int = 1,
    output: type[BaseModel] | None = None,
) -> Worker:
    """A :class:`Worker` named ``name`` that does each task with ``fn(task, ctx)``.

    ``fn`` may be sync or async and returns what :meth:`Worker.work` returns; ``output``
    is the model its structured output is validated against (see :class:`Worker`).
    Raises :class:`UsageError` when ``fn`` is not callable or the topic is bad.
    """
    if not callable(fn):
        raise UsageError(f"worker() needs a function fn(task, ctx), got {fn!r}")
    return _FunctionWorker(fn, topic=topic, name=name, max_attempts=max_attempts, output=output)


def as_result(
    task: Task, out: WorkOutput, worker_name: str, *, output: type[BaseModel] | None = None
) -> TaskResult:
    """``out`` as the :class:`TaskResult` of ``task``.

    Structured output (a ``dict`` or a pydantic model) becomes ``data``, validated against
    ``output`` when given. Raises ``TypeError`` for output of any other kind or that does
    not fit ``output`` (naming the fields), which fails the task.
    """
    ids: dict[str, Any] = {
        "job_id": task.job_id,
        "index": task.index,
        "title": task.title,
        "attempt": task.attempt,
    }
    if isinstance(out, TaskResult):
        return out.model_copy(update={**ids, "worker": out.worker or worker_name})
    if isinstance(out, str):
        return TaskResult(text=out, worker=worker_name, **ids)
    if isinstance(out, dict | BaseModel):
        return TaskResult(data=_structured(out, output, worker_name), worker=worker_name, **ids)
    raise TypeError(
        f"worker {worker_name!r} returned {type(out).__name__!r}; a worker returns a "
        "TaskResult, a str (the text), or a dict or pydantic model (the data)"
    )


def _structured(
    out: dict[str, Any] | BaseModel, output: type[BaseModel] | None, worker_name: str
) -> dict[str, Any]:
    if output is None:
        if isinstance(out, BaseModel):
            return out.model_dump(mode="json")
        return out
    try:
        model = output.model_validate(out.model_dump() if isinstance(out, BaseModel) else out)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise TypeError(
            f"worker {worker_name!r} returned data that is not a valid {output.__name__}: "
            f"{problems}"
        ) from None
    return model.model_dump(mode="json")
