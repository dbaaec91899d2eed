"""A question waits while no process runs; the CLI answers it; a fresh worker resumes.

Real ``agentbus worker`` subprocesses on a real Redis, and ``agentbus pending`` /
``agentbus answer`` as subprocesses; and the embedded default, whose running runtime
is answered by the CLI in another process through its SQLite file.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentbus import Retention, Runtime
from agentbus.testing import wait_for
from agentbus.testing.workers import WorkerProcesses, run_cli

APP = str(Path(__file__).with_name("ask_app.py")) + ":app"


def _lines(log: Path, word: str) -> list[list[str]]:
    if not log.exists():
        return []
    return [w for w in (line.split() for line in log.read_text().splitlines()) if w[0] == word]


def _app() -> Any:
    """``ask_app.py``, loaded once per process (its message types register once)."""
    if "ask_app" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "ask_app", Path(__file__).with_name("ask_app.py")
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["ask_app"] = module
        spec.loader.exec_module(module)
    return sys.modules["ask_app"]


def _refund(order: str, amount: float) -> Any:
    return _app().Refund(order=order, amount=amount)


async def _result(rt: Runtime, run_id: str, order: str) -> dict[str, Any] | None:
    for r in await rt.journal.records(run_id):
        event = r.record.get("event") or {}
        if (
            r.kind == "published"
            and event.get("type") == "askmp.Refunded"
            and (event["data"]["order"] == order)
        ):
            return dict(event["data"])
    return None


async def _pending(url: str, run_id: str) -> list[dict[str, Any]]:
    done = run_cli("pending", "--run", run_id, "--json", "--url", url)
    assert done.returncode == 0, done.stderr
    listed: list[dict[str, Any]] = json.loads(done.stdout)
    return listed


@pytest.mark.redis
@pytest.mark.slow
async def test_every_worker_stopped_while_a_question_waits_then_answered_and_resumed(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    url = f"{redis_url}?prefix={redis_prefix}"
    log = tmp_path / "ask.log"
    env = {"ASK_LOG": str(log)}
    async with Runtime(url) as driver:  # hosts nothing: drives the run, reads the journal
        run = driver.run("ask-workers")
        await run.begin()
        with WorkerProcesses(url, APP) as workers:
            workers.start(consumer="w1", env=env)
            workers.start(consumer="w2", env=env)
            await run.publish("askmp.refunds", _refund("B-1", 480))
            await wait_for(
                lambda: len(_lines(log, "tool")) == 1, timeout=20, message="the risk check"
            )
            listed: list[dict[str, Any]] = []

            async def asked() -> bool:
                listed[:] = await driver.pending(run.run_id)
                return bool(listed)

            await wait_for(asked, timeout=20, message="the question pending")
        # Every worker has stopped: nobody holds the run. It waits in the store alone.
        (question,) = await _pending(url, run.run_id)
        assert question["agent"] == "approver"
        assert question["question"] == {"order": "B-1", "amount": 480.0}
        topics = {t.topic: t for t in await driver.transport.admin.topics()}
        assert [g.pending for g in topics["askmp.refunds"].groups] == [0, 0]

        bad = run_cli("answer", run.run_id, question["question_id"], '{"approve": 3}', "--url", url)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "does not fit Decision: approve" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1  # one clear line

        done = run_cli(
            "answer", run.run_id[:12], question["question_id"], '{"approve": true}', "--url", url
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"answered question {question['question_id']}" in done.stdout
        assert await _pending(url, run.run_id) == []

        with WorkerProcesses(url, APP) as fresh:
            fresh.start(consumer="w3", env=env)

            async def resumed() -> bool:
                return await _result(driver, run.run_id, "B-1") is not None

            await wait_for(resumed, timeout=30, message="the run resumed on the fresh worker")
            assert await _result(driver, run.run_id, "B-1") == {
                "order": "B-1",
                "status": "refunded",
                "note": "",
            }
            # The risk check before the question was made once, by a stopped worker;
            # the fresh one answered it from the journal.
            assert [w[2] for w in _lines(log, "tool")] in (["w1"], ["w2"])
            assert [w[2] for w in _lines(log, "answered")] == ["w3"]
            assert len(_lines(log, "audit")) == 1  # the woken event was for approver only

            # Answer-to-resume latency with the default 2 s wake-up poll: from the answer
            # stored (by the CLI) to the handler having it.
            await run.publish("askmp.refunds", _refund("B-2", 250))
            await wait_for(
                lambda: len(_lines(log, "tool")) == 2, timeout=20, message="the second check"
            )
            second: list[dict[str, Any]] = []

            async def asked_again() -> bool:
                second[:] = await _pending(url, run.run_id)
                return bool(second)

            await wait_for(asked_again, timeout=20, message="the second question pending")
            qid = second[0]["question_id"]
            answer = run_cli("answer", run.run_id, qid, '{"approve": false}', "--url", url)
            assert answer.returncode == 0, answer.stderr
            await wait_for(lambda: len(_lines(log, "answered")) == 2, timeout=20, message="resumed")
            stored = await driver.transport.store.get_question(run.run_id, qid)
            assert stored is not None
            assert stored.closed is not None
            latency = float(_lines(log, "answered")[1][3]) - stored.closed
            print(f"\nanswer stored -> handler resumed with it: {latency * 1000:.0f} ms")
            assert 0 < latency < Retention().wakeups + 2.0
        await run.finish()
        records = await driver.journal.records(run.run_id)
        kinds = [r.kind for r in records]
        assert kinds.count("parked") == 2
        assert kinds.count("question_answered") == 2
        calls = [r.record for r in records if r.kind == "tool_call"]
        assert sum(1 for c in calls if not c.get("resumed")) == 2
        assert sum(1 for c in calls if c.get("resumed")) == 2


async def test_the_cli_answers_a_question_of_a_running_embedded_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"memory://?journal={tmp_path / 'journal.sqlite3'}"
    log = tmp_path / "ask.log"
    monkeypatch.setenv("ASK_LOG", str(log))

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        # In a thread: the runtime's loop keeps running (and committing its journal)
        # while the command runs, as with a person at another terminal.
        return await asyncio.to_thread(run_cli, *args)

    app = _app().app
    rt = Runtime(url, retention=Retention(wakeups=0.2), block_ms=100)
    rt.add(*app.build_agents())
    async with rt, rt.run("embedded") as run:
        await run.publish("askmp.refunds", _refund("C-1", 999))
        await wait_for(lambda: bool(_lines(log, "tool")), timeout=10, message="asked")

        async def asked() -> bool:
            return bool(await rt.pending(run.run_id))

        await wait_for(asked, timeout=10, message="the question pending")
        listing = await cli("pending", "--url", url)  # another process, the same file
        assert listing.returncode == 0, listing.stderr
        assert "askmp.Approval" in listing.stdout
        (q,) = json.loads(
            (await cli("pending", "--run", run.run_id, "--json", "--url", url)).stdout
        )
        unknown = await cli("answer", run.run_id, "qnope", '{"approve": true}', "--url", url)
        assert unknown.returncode == 2
        assert "has no question 'qnope'" in unknown.stderr
        not_json = await cli("answer", run.run_id, q["question_id"], "{approve}", "--url", url)
        assert not_json.returncode == 2
        assert "the answer must be JSON" in not_json.stderr
        done = await cli(
            "answer",
            run.run_id,
            q["question_id"],
            '{"approve": true, "note": "cli"}',
            "--url",
            url,
        )
        assert done.returncode == 0, done.stderr

        async def resumed() -> bool:
            return await _result(rt, run.run_id, "C-1") is not None

        await wait_for(resumed, timeout=10, message="the embedded run resumed")
        again = await cli(
            "answer", run.run_id, q["question_id"], '{"approve": false}', "--url", url
        )
        assert again.returncode == 1
        assert "already answered by agentbus answer" in again.stderr
    assert len(_lines(log, "tool")) == 1
    none = await cli("pending", "--url", url)
    assert "no questions waiting" in none.stdout
