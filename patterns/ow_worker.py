"""Workers: the agents that compete for tasks on an orchestrator's work topic.

Subclass :class:`Worker` and implement :meth:`Worker.work`, or make one from a function
with :func:`worker`. All workers with one name form one consumer group on the topic, so
each task goes to exactly one of them; run more processes to add replicas.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from agentbus import Agent, Context, HandlerSpec, Message, UsageError, handle

from .ow_messages import Task, TaskResult

__all__ = ["WorkFn", "WorkOutput", "Worker", "worker"]

WorkOutput: TypeAlias = TaskResult | str | dict[str, Any]
"""What a worker may return: a :class:`TaskResult`, a ``str`` (the result's ``text``) or a
``dict`` (its ``data``). The worker fills in the task's job id, index, title and attempt."""
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

    Raises :class:`UsageError` for a bad topic or ``max_attempts``.
    """

    def __init__(self, *, topic: str, name: str | None = None, max_attempts: int = 1) -> None:
        handle(topic)  # validates the topic name now, at configuration time
        if max_attempts < 1:
            raise UsageError(f"max_attempts must be at least 1, got {max_attempts!r}")
        super().__init__(name=name)
        self.topic = topic
        self.max_attempts = max_attempts

    def handlers(self) -> list[tuple[HandlerSpec, tuple[type[Message], ...]]]:
        """The task handler on this worker's topic, plus any declared with ``@handle``."""
        spec = HandlerSpec(
            self.topic, "on_task", "shared", (Task,), None, False, self.max_attempts, None
        )
        return [*super().handlers(), (spec, (Task,))]

    async def on_task(self, task: Task, ctx: Context) -> TaskResult:
        """Do one task and wrap the output as its :class:`TaskResult`."""
        out = await self.work(task, ctx)
        return as_result(task, out, self.name)

    async def work(self, task: Task, ctx: Context) -> WorkOutput:
        """Do ``task``. Override this; the base class raises ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} must implement work(task, ctx)")


class _FunctionWorker(Worker):
    def __init__(self, fn: WorkFn, *, topic: str, name: str, max_attempts: int) -> None:
        super().__init__(topic=topic, name=name, max_attempts=max_attempts)
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


def worker(fn: WorkFn, *, topic: str, name: str, max_attempts: int = 1) -> Worker:
    """A :class:`Worker` named ``name`` that does each task with ``fn(task, ctx)``.

    ``fn`` may be sync or async and returns what :meth:`Worker.work` returns. Raises
    :class:`UsageError` when ``fn`` is not callable or the topic is bad.
    """
    if not callable(fn):
        raise UsageError(f"worker() needs a function fn(task, ctx), got {fn!r}")
    return _FunctionWorker(fn, topic=topic, name=name, max_attempts=max_attempts)


def as_result(task: Task, out: WorkOutput, worker_name: str) -> TaskResult:
    """``out`` as the :class:`TaskResult` of ``task``.

    Raises ``TypeError`` for any other kind of output.
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
    if isinstance(out, dict):
        return TaskResult(data=out, worker=worker_name, **ids)
    raise TypeError(
        f"a worker must return a TaskResult, a str or a dict, got {type(out).__name__!r}"
    )
