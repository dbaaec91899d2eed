"""SIGKILL a worker mid-handler in an LLM run; a fresh worker resumes without re-paying calls.

Real ``agentbus worker`` subprocesses on a real Redis, their model a local OpenAI-compatible
HTTP server (``openai_server.py``) that counts the requests it gets. The writer agent
(``resume_app.py``) makes 4 model calls per event. An uncrashed event costs 4 requests; an
event whose worker is killed after 2 of them, and finished by a fresh worker, costs 4 in
all: the fresh worker's first 2 calls are answered from the journal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openai_server import OpenAIServer

from agentbus import Runtime
from agentbus.inspect import build_trace, render_tree
from agentbus.testing import wait_for
from agentbus.testing.workers import WorkerProcesses
from agentbus.transports import JournalRecord

pytestmark = [pytest.mark.redis, pytest.mark.slow]

HERE = Path(__file__).parent
APP = f"{HERE / 'resume_app.py'}:app"
PARTS = 4


def model_env(server: OpenAIServer) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": server.url,
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "OPENAI_MODEL": "test-model",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }


def of(records: list[JournalRecord], event_id: str, kind: str) -> list[dict[str, Any]]:
    return [r.record for r in records if r.kind == kind and r.record.get("event_id") == event_id]


async def write_essay(
    url: str, topic: str, until: Callable[[list[JournalRecord], str], bool], timeout: float
) -> tuple[str, str]:
    """Publish an essay request in a run of its own; wait until ``until`` holds."""
    from resume_app import ESSAYS, Essay

    async with Runtime(url) as rt:
        async with rt.run(f"essay-{topic}") as run:
            event_id = await run.publish(ESSAYS, Essay(topic=topic))

        async def reached() -> bool:
            return until(await rt.journal.records(run.run_id), event_id)

        await wait_for(reached, timeout=timeout, interval=0.05, message=f"essay on {topic}")
    return run.run_id, event_id


def handled(records: list[JournalRecord], event_id: str) -> bool:
    return bool(of(records, event_id, "handled"))


@pytest.mark.timeout(120)
async def test_a_killed_worker_s_model_calls_are_not_paid_again(
    redis_url: str, redis_prefix: str, openai_server: OpenAIServer
) -> None:
    url = f"{redis_url}?prefix={redis_prefix}"
    for i in range(2 * PARTS):
        openai_server.reply(f"paragraph {i}")
    env = model_env(openai_server)
    with WorkerProcesses(url, APP) as workers:
        # An uncrashed event: what one costs.
        workers.start(consumer="steady", env=env)
        await write_essay(url, "tea", handled, timeout=30)
        uncrashed = len(openai_server.requests)
        workers.kill("steady")

        # Killed after 2 of its 4 model calls (during the slow research tool).
        workers.start(consumer="victim", env={**env, "RESUME_RESEARCH_S": "60"})

        def two_calls(records: list[JournalRecord], event_id: str) -> bool:
            return len(of(records, event_id, "model_call")) == 2

        run_id, event_id = await write_essay(url, "tides", two_calls, timeout=30)
        assert len(openai_server.requests) == uncrashed + 2
        workers.kill("victim")
        workers.start(consumer="fresh", env=env, extra=("--visibility-timeout", "1"))
        async with Runtime(url) as reader:

            async def done() -> bool:
                return handled(await reader.journal.records(run_id), event_id)

            await wait_for(
                done,
                timeout=45,
                interval=0.1,
                message="the fresh worker handling the event (without resume it asks the server for replies it has no script for)",
            )
            records = await reader.journal.records(run_id)
            info = await reader.journal.run(run_id)

    crashed = len(openai_server.requests) - uncrashed
    assert (uncrashed, crashed) == (PARTS, PARTS)
    calls = of(records, event_id, "model_call")
    assert [(c["call_index"], bool(c.get("resumed"))) for c in calls] == [
        (0, False),
        (1, False),
        (0, True),
        (1, True),
        (3, False),
        (4, False),
    ]
    (research,) = [c for c in of(records, event_id, "tool_call") if c.get("response")]
    assert research["call_index"] == 2
    assert not research.get("resumed")
    delivered = [r["consumer"] for r in of(records, event_id, "delivered")]
    assert delivered == ["victim", "fresh"]
    # The draft carries the crashed attempt's paragraphs and the fresh worker's.
    drafts = [r.record["event"]["data"] for r in records if r.kind == "published"][1:]
    assert drafts == [{"parts": ["paragraph 4", "paragraph 5", "paragraph 6", "paragraph 7"]}]
    assert info is not None
    tree = render_tree(build_trace(info, records))
    assert "writer: handled" in tree
    assert "resumed 2 calls from the journal" in tree
    # Tokens are counted once per paid call (the server's usage: 11 + 7 a call).
    assert build_trace(info, records).tokens == PARTS * 18
