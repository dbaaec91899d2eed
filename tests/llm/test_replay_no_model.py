"""A run recorded against an OpenAI-compatible server replays with no model configured.

Record and replay run as real ``agentbus`` subprocesses; the recording's model is the local
scripted server (``openai_server.py``), and the replay's environment has no ``OPENAI_*``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from openai_server import OpenAIServer

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "replay" / "env_app.py"
MODEL_VARIABLES = ("OPENAI_", "AGENTBUS_MODEL")


def agentbus(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(MODEL_VARIABLES)}
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        env={**base, "AGENTBUS_URL": "", **(env or {})},
    )


def record(server: OpenAIServer, cwd: Path) -> str:
    server.reply_tool_call("city_weather", {"city": "Paris"}, call_id="call_1")
    server.reply("Rainy in Paris, 14 C.")
    server.reply("Oslo: I only know about Paris today.")
    done = agentbus(
        "run",
        str(APP),
        "--json",
        cwd=cwd,
        env={
            "OPENAI_BASE_URL": server.url,
            "OPENAI_API_KEY": "sk-test-not-a-real-key",
            "OPENAI_MODEL": "test-model",
        },
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["result"][0] == "test-model: Rainy in Paris, 14 C."
    assert len(server.requests) == 3
    return str(out["run_id"])


def records(run_id: str, cwd: Path) -> list[dict]:
    async def read() -> list[dict]:
        from agentbus import Journal

        url = f"memory://?journal={cwd / '.agentbus' / 'journal.sqlite3'}"
        async with Journal.open(url) as journal:
            return [r.record for r in await journal.records(run_id)]

    import asyncio

    return asyncio.run(read())


def test_replay_needs_no_model_configuration(openai_server: OpenAIServer, tmp_path: Path) -> None:
    run_id = record(openai_server, tmp_path)
    done = agentbus("replay", run_id, "--json", cwd=tmp_path)  # no OPENAI_* at all
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["verdict"] == "identical"
    assert result["substituted_calls"] == 4  # three model calls and one tool call
    assert result["live_calls"] == 0
    assert len(openai_server.requests) == 3  # the replay did not call the server
    # The replay's journal says which recorded call answered each call, and with what model.
    calls = [r for r in records(result["run_id"], tmp_path) if r["kind"] == "model_call"]
    assert len(calls) == 3
    assert all(c["substituted"] for c in calls)
    assert {c["name"] for c in calls} == {"agentbus-offline"}  # what is configured now
    assert {c["recorded"]["name"] for c in calls} == {"test-model"}  # what answered
    assert {c["recorded"]["provider"] for c in calls} == {"openai-compatible"}
    assert all(c["response"]["model"] == "test-model" for c in calls)


def test_fork_exit_status_says_where_the_fork_differs(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    run_id = record(openai_server, tmp_path)
    # Positions are the `#N` of `agentbus trace`: published events in journal order.
    events = [r["event"] for r in records(run_id, tmp_path) if r["kind"] == "published"]
    prompts = [i for i, e in enumerate(events) if e["type"] == "agents.Prompt"]
    assert len(prompts) == 2
    total = len(events)

    # Forked at the end: every call answered from the recording -> identical, exit 0.
    same = agentbus("replay", run_id, "--fork-at", str(total), "--json", cwd=tmp_path)
    assert same.returncode == 0, same.stdout + same.stderr
    assert json.loads(same.stdout)["verdict"] == "identical"

    # Forked at the second question: its answer now comes from the live (offline) model,
    # so the run follows the recording up to there and differs after -> exit 3.
    fork = agentbus("replay", run_id, "--fork-at", str(prompts[1]), "--json", cwd=tmp_path)
    assert fork.returncode == 3, fork.stdout + fork.stderr
    result = json.loads(fork.stdout)
    assert result["verdict"] == "diverged_after_fork"
    assert result["divergence"]["position"] > prompts[1]
    assert result["substituted_calls"] == 3  # the first question: model, tool, model
    assert result["live_calls"] > 0
    text = agentbus("replay", run_id, "--fork-at", str(prompts[1]), cwd=tmp_path)
    assert text.returncode == 3
    assert f"follows the recording up to event #{prompts[1]}" in text.stdout

    # A code change that shows before the fork point: the fork does not continue the
    # recorded run -> exit 1.
    changed = tmp_path / "env_app_changed.py"
    changed.write_text(APP.read_text().replace("Be brief.", "Be verbose."))
    before = agentbus(
        "replay", run_id, "--app", f"{changed}:app", "--fork-at", str(total), "--json", cwd=tmp_path
    )
    assert before.returncode == 1, before.stdout + before.stderr
    assert json.loads(before.stdout)["verdict"] == "diverged"
    assert len(openai_server.requests) == 3  # no fork reached the server
