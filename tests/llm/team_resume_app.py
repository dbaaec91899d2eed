"""An LLM orchestrator-worker team for the orchestrator crash-and-resume test.

The lead plans with its model (one call), sends the tasks to the engineers, and writes
the answer with its model (one call). An engineer makes two model calls per task with an
"estimate" tool between them. With ``TEAM_SLOW_ESTIMATE_S`` set (the worker the test
kills) the estimate of every task but the first takes that long: the test kills the
worker then, while no model request is in flight. Everything runs in one worker process,
as in the issue's report; the model is the test's local OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from agentbus import App, Context
from agentbus.agents import ChatMessage, ChatRequest, call_model, model_from_env
from agentbus.patterns.orchestrator_worker import (
    ModelAggregator,
    ModelPlanner,
    Orchestrator,
    Task,
    worker,
)

JOBS = "team.jobs"
TASKS = "team.tasks"


async def estimate(task: Task) -> dict[str, Any]:
    if task.index > 0:
        await asyncio.sleep(float(os.environ.get("TEAM_SLOW_ESTIMATE_S", "0")))
    return {"days": len(task.text) % 5 + 1}


async def engineer(task: Task, ctx: Context) -> str:
    model = model_from_env()
    draft = await call_model(
        ctx,
        model,
        ChatRequest(messages=[ChatMessage.system("Draft the steps."), ChatMessage.user(task.text)]),
    )
    days = await ctx.invoke("tool", "estimate", {"title": task.title}, lambda: estimate(task))
    final = await call_model(
        ctx,
        model,
        ChatRequest(
            messages=[
                ChatMessage.system("Finish the plan."),
                ChatMessage.user(f"{task.text}\n{draft.text}\n{days['days']} days"),
            ]
        ),
    )
    return final.text


def lead() -> Orchestrator:
    model = model_from_env()
    return Orchestrator(
        name="lead",
        topic=JOBS,
        work_topic=TASKS,
        plan=ModelPlanner(model),
        aggregate=ModelAggregator(model),
        task_timeout=90,
        max_attempts=1,
    )


# max_attempts: a delivery cut short by a crash counts as an attempt.
app = App(
    "team-resume",
    [lead, lambda: worker(engineer, topic=TASKS, name="engineer", max_attempts=3)],
)
