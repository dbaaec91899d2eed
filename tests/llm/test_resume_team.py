"""SIGKILL the worker holding an LLM orchestrator's job mid-job; a fresh one resumes it.

The issue's report: one worker hosting a whole LLM team, killed mid-job, and the run paid
more than three times the model calls of an uncrashed one. Here one ``agentbus worker``
subprocess hosts the lead (an orchestrator planning and aggregating with its model) and
the engineers (two model calls a task, a tool between them), on a real Redis, the model
a local OpenAI-compatible HTTP server that counts the requests it gets. The worker is
killed once the plan, the first task and the first half of the two others are journaled
(the two others then sit in a slow tool: no model request in flight). A fresh worker
finishes the run: the lead's plan comes from the journal, its three task requests are not
sent again (the first one's reply is in the journal, the two others' replies are awaited
there), the engineers' first calls come from the journal. The server gets exactly as many
requests as for an uncrashed run.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from openai_server import OpenAIServer

from agentbus import Runtime
from agentbus.inspect import build_trace, render_tree
from agentbus.patterns.orchestrator_worker import Job, JobResult
from agentbus.testing import wait_for
from agentbus.testing.workers import WorkerProcesses
from agentbus.transports import JournalRecord

pytestmark = [pytest.mark.redis, pytest.mark.slow]

HERE = Path(__file__).parent
APP = f"{HERE / 'team_resume_app.py'}:app"
TASKS = 3
#: The plan, two calls per task, the answer.
PER_RUN = 1 + 2 * TASKS + 1


def model_env(server: OpenAIServer) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": server.url,
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "OPENAI_MODEL": "test-model",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }


def script_a_run(server: OpenAIServer) -> None:
    plan = [{"title": f"part {i}", "text": f"build part {i}"} for i in range(TASKS)]
    server.reply(json.dumps({"tasks": plan}))
    for i in range(2 * TASKS):
        server.reply(f"step text {i}")
    server.reply("the merged plan")


def kinds(records: list[JournalRecord], kind: str) -> list[dict[str, Any]]:
    return [r.record for r in records if r.kind == kind]


@pytest.mark.timeout(150)
async def test_a_killed_orchestrator_resumes_without_paying_or_sending_again(
    redis_url: str, redis_prefix: str, openai_server: OpenAIServer
) -> None:
    from team_resume_app import JOBS
    from team_resume_app import TASKS as TASK_TOPIC

    url = f"{redis_url}?prefix={redis_prefix}"
    env = model_env(openai_server)
    with WorkerProcesses(url, APP) as workers:
        async with Runtime(url) as rt:
            # An uncrashed run: what one costs.
            script_a_run(openai_server)
            workers.start(consumer="steady", env=env)
            async with rt.run("team") as run:
                result = await run.request(
                    JOBS, Job(id="j0", goal="g"), expect=JobResult, timeout=60
                )
            assert result.status == "completed"
            uncrashed = len(openai_server.requests)
            workers.kill("steady")

            script_a_run(openai_server)
            workers.start(consumer="victim", env={**env, "TEAM_SLOW_ESTIMATE_S": "120"})
            async with rt.run("team") as run:
                crashed_run = run.run_id

                async def in_the_slow_tool() -> bool:
                    # The plan, task 0's two calls, the first call of tasks 1 and 2:
                    # journaled, so a resume can answer them.
                    records = await rt.journal.records(run.run_id)
                    return len(kinds(records, "model_call")) == 1 + 2 + 2

                async def kill_then_restart() -> None:
                    await wait_for(in_the_slow_tool, timeout=45, interval=0.05, message="5 calls")
                    workers.kill("victim")
                    workers.start(consumer="fresh", env=env, extra=("--visibility-timeout", "1"))

                restarter = asyncio.create_task(kill_then_restart())
                result = await run.request(
                    JOBS, Job(id="j1", goal="g"), expect=JobResult, timeout=120
                )
                await restarter

            async def lead_handled() -> bool:
                # Its ack (and record) follows its reply.
                records = await rt.journal.records(crashed_run)
                return any(r["agent"] == "lead" for r in kinds(records, "handled"))

            await wait_for(lead_handled, timeout=10, message="the lead's handled record")
            records = await rt.journal.records(crashed_run)
            info = await rt.journal.run(crashed_run)

    crashed = len(openai_server.requests) - uncrashed
    assert result.status == "completed"
    assert result.text == "the merged plan"
    assert (uncrashed, crashed) == (PER_RUN, PER_RUN)
    # The lead sent each task once: the fresh worker's lead took the replies from the
    # journal (task 0's) or waited for them there (tasks 1 and 2, replied to the dead
    # worker's inbox by the engineers that resumed them).
    sent = [r for r in kinds(records, "published") if r["topic"] == TASK_TOPIC]
    assert len(sent) == TASKS
    resumed = [r for r in kinds(records, "step") if r["step"] == "request.resumed"]
    assert sorted(r["request_id"] for r in resumed) == sorted(r["event_id"] for r in sent)
    leads = [r["consumer"] for r in kinds(records, "delivered") if r["agent"] == "lead"]
    assert leads == ["victim", "fresh"]
    calls = [(r["agent"], bool(r.get("resumed"))) for r in kinds(records, "model_call")]
    assert calls.count(("lead", True)) == 1  # the plan
    assert calls.count(("engineer", True)) == 2  # tasks 1 and 2's first calls
    assert info is not None
    tree = render_tree(build_trace(info, records))
    assert "lead: handled" in tree
    assert "resumed 1 calls and 3 requests from the journal" in tree
