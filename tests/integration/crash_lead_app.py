"""An orchestrator-worker team for the coordinator-crash test.

``lead_app`` (the orchestrator) runs in ``agentbus worker`` subprocesses, one of which the
test kills while it holds the job; the test's own runtime hosts ``researchers`` and drives
the run. Everything runs with the runtime's default settings.
"""

from __future__ import annotations

import asyncio

from agentbus import App, Context
from agentbus.patterns.orchestrator_worker import Job, Orchestrator, Task, worker

JOBS = "crash.jobs"
TASKS = "crash.tasks"


def plan(job: Job) -> list[Task]:
    return [Task(title=f"part {i}", text=f"{job.goal} #{i}") for i in range(3)]


async def research(task: Task, ctx: Context) -> str:
    await asyncio.sleep(2.0)  # the lead waits on its workers long enough to be killed
    return task.text.upper()


lead_app = App(
    "crash-lead", [lambda: Orchestrator(name="lead", topic=JOBS, work_topic=TASKS, plan=plan)]
)
researchers = App("crash-researchers", [lambda: worker(research, topic=TASKS, name="researcher")])
