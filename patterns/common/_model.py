"""Coordinator steps backed by a language model: planning, routing and aggregation.

Every model call goes through :func:`agents.call_model`, so it is journaled with its
request and response (in the one shape every agent's model call has) and replaced by the
recorded response on replay. The model is any :class:`agents.ChatModel`
(``agents.model_from_env()`` picks a real one when configured and the deterministic offline
one otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic import BaseModel, Field

from agentbus import Context, UsageError
from agentbus.agents import ChatMessage, ChatModel, ChatRequest, ChatResponse, call_model

from ._messages import Job, Summary, Task, TaskFailure, TaskResult
from ._steps import Child, Delegation

__all__ = ["ModelAggregator", "ModelPlanner", "ModelRouter", "model_label"]

PLAN_INSTRUCTIONS = (
    "You are the planner of a team. Split the job into independent tasks that workers can "
    "do in parallel. Give each task a short title and a self-contained instruction. Give "
    "tasks that must run one after another, in order, the same key; leave the key empty "
    "otherwise. Use at most {max_tasks} tasks."
)
ROUTE_INSTRUCTIONS = (
    "You are a supervisor. Decide which of your children should work on the job and write "
    "each chosen child a self-contained goal for its part. Choose only among the children "
    "listed; leave out children with nothing to do."
)
AGGREGATE_INSTRUCTIONS = (
    "You are the editor of a team. Merge the workers' results into one clear answer to the "
    "job. Keep facts and sources from the results; do not invent new ones. Mention tasks "
    "that failed."
)


def model_label(response: ChatResponse) -> str:
    """Who wrote a response, for ``produced_by``: ``model:NAME`` (plus ``offline``)."""
    return f"model:{response.model}" + (" (offline)" if response.offline else "")


class _PlannedTask(BaseModel):
    title: str
    text: str
    key: str | None = None


class _Plan(BaseModel):
    tasks: list[_PlannedTask] = Field(min_length=1)


class ModelPlanner:
    """Plans a job by asking ``model`` for a list of tasks (structured output).

    ``instructions`` replaces the system prompt (``{max_tasks}`` is filled in). The plan is
    cut to ``max_tasks``. Raises :class:`UsageError` for ``max_tasks < 1``; a response that
    is not a valid plan raises :class:`agents.ModelResponseError` from :meth:`plan`.
    """

    def __init__(
        self, model: ChatModel, *, instructions: str = PLAN_INSTRUCTIONS, max_tasks: int = 8
    ) -> None:
        if max_tasks < 1:
            raise UsageError(f"max_tasks must be at least 1, got {max_tasks!r}")
        self.model = model
        self.instructions = instructions
        self.max_tasks = max_tasks

    async def plan(self, job: Job, ctx: Context) -> list[Task]:
        """Ask the model for the tasks of ``job``."""
        request = ChatRequest(
            messages=[
                ChatMessage.system(self.instructions.format(max_tasks=self.max_tasks)),
                ChatMessage.user(_describe_job(job)),
            ],
            response_schema=_Plan.model_json_schema(),
            response_schema_name="plan",
        )
        response = await call_model(ctx, self.model, request)
        plan = response.parse_as(_Plan)
        return [
            Task(title=t.title, text=t.text, key=t.key or None)
            for t in plan.tasks[: self.max_tasks]
        ]


class ModelAggregator:
    """Merges task results by asking ``model`` to write the answer.

    The :class:`Summary` it returns names the model in ``produced_by``.
    """

    def __init__(self, model: ChatModel, *, instructions: str = AGGREGATE_INSTRUCTIONS) -> None:
        self.model = model
        self.instructions = instructions

    async def aggregate(
        self, job: Job, results: list[TaskResult], failures: list[TaskFailure], ctx: Context
    ) -> Summary:
        """Ask the model for the merged answer."""
        parts = [_describe_job(job), "", "Results:"]
        parts += [f"### {r.index + 1}. {r.title}\n{r.text}" for r in results]
        if failures:
            parts.append("Failed tasks:")
            parts += [f"- {f.title}: {f.error}" for f in failures]
        request = ChatRequest(
            messages=[ChatMessage.system(self.instructions), ChatMessage.user("\n".join(parts))]
        )
        response = await call_model(ctx, self.model, request)
        return Summary(text=response.text, produced_by=model_label(response))


class ModelRouter:
    """Routes a job by asking ``model`` which children should do what (structured output).

    The model sees the job and each child's name and description, and must answer with
    delegations naming children only; ``instructions`` replaces the system prompt.
    """

    def __init__(self, model: ChatModel, *, instructions: str = ROUTE_INSTRUCTIONS) -> None:
        self.model = model
        self.instructions = instructions

    async def route(self, job: Job, children: Sequence[Child], ctx: Context) -> list[Delegation]:
        """Ask the model for the delegations of ``job``. Raises ``ModelResponseError``."""
        names = [c.name for c in children]
        item = {
            "type": "object",
            "properties": {"child": {"type": "string", "enum": names}, "goal": {"type": "string"}},
            "required": ["child", "goal"],
            "additionalProperties": False,
        }
        schema = {
            "type": "object",
            "properties": {"delegations": {"type": "array", "items": item, "minItems": 1}},
            "required": ["delegations"],
            "additionalProperties": False,
        }
        lines = [_describe_job(job), "Children:"]
        lines += [f"- {c.name}: {c.description or '(no description)'}" for c in children]
        request = ChatRequest(
            messages=[ChatMessage.system(self.instructions), ChatMessage.user("\n".join(lines))],
            response_schema=schema,
            response_schema_name="routing",
        )
        response = await call_model(ctx, self.model, request)
        parsed = response.parse_as(_Routing)
        return [
            Delegation(child=d.child, goal=d.goal, data=dict(job.data)) for d in parsed.delegations
        ]


class _Route(BaseModel):
    child: str
    goal: str


class _Routing(BaseModel):
    delegations: list[_Route]


def _describe_job(job: Job) -> str:
    text = f"Job: {job.goal}"
    if job.data:
        text += "\nInputs: " + json.dumps(job.data, sort_keys=True, default=str)
    return text
