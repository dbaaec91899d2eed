"""SIGKILL the worker holding the orchestrator's job: with default settings the run completes.

The default visibility timeout is 30 s, so recovery takes 30-45 s: the driver's request
(default timeout) must outwait it. This test therefore takes about a minute.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from crash_lead_app import JOBS, researchers

from agentbus import Runtime
from agentbus.patterns.orchestrator_worker import Job, JobResult
from agentbus.testing import wait_for
from agentbus.testing.workers import WorkerProcesses

pytestmark = [pytest.mark.redis, pytest.mark.slow]

LEAD_APP = f"{Path(__file__).with_name('crash_lead_app.py')}:lead_app"


@pytest.mark.timeout(115)
async def test_a_killed_coordinator_is_recovered_and_the_run_completes(
    redis_url: str, redis_prefix: str
) -> None:
    url = f"{redis_url}?prefix={redis_prefix}"
    with WorkerProcesses(url, LEAD_APP) as leads:
        leads.start(consumer="lead-a")
        leads.start(consumer="lead-b")
        async with Runtime(url) as rt:  # default settings throughout
            rt.add(*researchers.build_agents())
            await rt.ready()
            run = rt.run("crash-team")

            async def holder() -> str:
                # The lead's `delivered` record names the consumer holding the job.
                records = await rt.journal.records(run.run_id)
                for r in records:
                    if r.kind == "delivered" and r.record.get("agent") == "lead":
                        return str(r.record["consumer"])
                return ""

            async def kill_the_holder() -> str:
                await wait_for(holder, timeout=20, message="the lead took the job")
                victim = await holder()
                leads.kill(victim)
                return victim

            async with run:
                killer = asyncio.create_task(kill_the_holder())
                result: JobResult = await run.request(
                    JOBS, Job(id="j1", goal="go"), expect=JobResult
                )
                victim = await killer

        assert result.status == "completed"
        assert [r.text for r in result.results] == ["GO #0", "GO #1", "GO #2"]
        async with Runtime(url) as reader:
            info = await reader.journal.run(run.run_id)
            records = await reader.journal.records(run.run_id)
        survivor = {"lead-a", "lead-b"} - {victim}
        delivered = [
            r.record["consumer"]
            for r in records
            if r.kind == "delivered" and r.record.get("agent") == "lead"
        ]
        assert delivered == [victim, *survivor]  # taken over after the crash
        assert info.status == "completed"
        # The run's status holds: nothing it published came after it finished.
        assert info.late_events == 0
        kinds = [r.kind for r in records]
        end = kinds.index("run_finished")
        assert "published" not in kinds[end:]
