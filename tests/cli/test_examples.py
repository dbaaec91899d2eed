"""Every example workflow: run it offline, get a result and a run id, replay it: identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


def agentbus(*args: str, cwd: Path, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTBUS_URL": url or ""}
    env.pop("OPENAI_API_KEY", None)  # the examples must work offline
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def assert_quiet(stderr: str) -> None:
    """Expected failures in a demo (a dropped contract, a crashing source) are outcomes,
    not crashes: nothing on stderr may look like one. Plain notes are fine."""
    alarming = [
        line
        for line in stderr.splitlines()
        if any(word in line for word in ("WARNING", "ERROR", "CRITICAL", "Traceback"))
    ]
    assert alarming == [], stderr


def test_there_is_an_example_per_pattern() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"research_team", "engineering_org", "incident_war_room", "task_auction"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_offline_and_replays_identically(example: Path, tmp_path: Path) -> None:
    done = agentbus("run", str(example), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_quiet(done.stderr)
    out = json.loads(done.stdout)
    assert out["status"] == "completed"
    assert out["result"]  # a meaningful, non-empty result
    replay = agentbus("replay", out["run_id"], "--json", cwd=tmp_path)
    result = json.loads(replay.stdout)
    assert replay.returncode == 0, result["divergence"]
    assert result["identical"] is True
    assert result["produced_events"] == result["recorded_events"] > 0
    assert_quiet(replay.stderr)


@pytest.mark.redis
@pytest.mark.parametrize("name", ["research_team", "incident_war_room"])
def test_example_replays_identically_on_redis(
    name: str, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    url = f"{redis_url}?prefix={redis_prefix}"
    done = agentbus("run", str(ROOT / "examples" / f"{name}.py"), "--json", cwd=tmp_path, url=url)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    replay = agentbus("replay", run_id, "--json", cwd=tmp_path, url=url)
    result = json.loads(replay.stdout)
    assert replay.returncode == 0, result["divergence"]
    assert result["identical"] is True


def test_llm_assistant_calls_its_tool_and_says_the_offline_model_answered(tmp_path: Path) -> None:
    done = agentbus("run", str(ROOT / "examples" / "llm_assistant.py"), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)["result"]
    assert reply["offline"] is True
    assert reply["text"].startswith("[offline model] Based on lookup_order:")
    assert '"status": "shipped"' in reply["text"]  # the tool's answer for order A-1001
    assert reply["steps"] == 2  # one model call chose the tool, one answered from its result
    assert "offline model answered" in done.stderr
