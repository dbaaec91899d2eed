"""The `agentbus` command end to end, in real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agentbus.testing.workers import run_cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support_desk.py"


agentbus = run_cli  # `agentbus ARGS` as a subprocess


def test_run_embedded_prints_result_and_run_id_and_runs_lists_it_after_exit(tmp_path: Path) -> None:
    env = {"AGENTBUS_URL": ""}
    done = agentbus("run", str(EXAMPLE), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert '"by_team"' in done.stdout
    run_id = done.stdout.split("run id: ")[1].split()[0]
    assert (tmp_path / ".agentbus" / "journal.sqlite3").exists()

    listed = agentbus("runs", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert [r["run_id"] for r in runs] == [run_id]
    assert runs[0]["status"] == "completed"
    assert runs[0]["name"] == "support-desk"
    assert runs[0]["events"] == 16  # 4 tickets: ticket, routed ticket, two replies each

    table = agentbus("runs", cwd=tmp_path, env=env)
    assert run_id in table.stdout
    assert "support-desk" in table.stdout

    trace = agentbus("trace", run_id[:10], "--json", cwd=tmp_path, env=env)
    assert trace.returncode == 0, trace.stderr
    tree = json.loads(trace.stdout)
    assert tree["events"] == 16
    assert len(tree["tree"]) == 4


def test_run_json_output(tmp_path: Path) -> None:
    done = agentbus("run", str(EXAMPLE), "--json", "--url", "memory://?journal=", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "completed"
    assert out["result"]["by_team"] == {"billing": 2, "tech": 1, "general": 1}


def test_wrong_url_scheme_is_a_one_line_usage_error(tmp_path: Path) -> None:
    done = agentbus("runs", "--url", "kafka://localhost", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "unsupported transport URL 'kafka://localhost'" in done.stderr


def test_unreachable_redis_names_the_url_and_hides_the_password(tmp_path: Path) -> None:
    done = agentbus("topics", "--url", "redis://:s3cret@127.0.0.1:1/0", cwd=tmp_path)
    assert done.returncode == 1
    assert "127.0.0.1:1" in done.stderr
    assert "redis-server running" in done.stderr
    assert "s3cret" not in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("no_such_module_xyz:app", "cannot import module 'no_such_module_xyz'"),
        ("examples.support_desk:nope", "has no attribute 'nope'"),
        ("examples.support_desk:TICKETS", "expected an agentbus.App"),
        ("missing.py", "no such file"),
    ],
)
def test_bad_app_reference_is_a_clear_error(ref: str, expected: str) -> None:
    done = agentbus("worker", ref, "--url", "memory://?journal=", cwd=ROOT)
    assert done.returncode == 2
    assert expected in done.stderr, done.stderr


@pytest.mark.redis
def test_topics_and_worker_on_redis(redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    url = f"{redis_url}?prefix={redis_prefix}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "agentbus", "worker", "examples.support_desk:app", "--url", url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert worker.stdout is not None
        assert "hosting billing, general, tech, triage" in worker.stdout.readline()
        done = agentbus("run", str(EXAMPLE), "--no-agents", "--url", url, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert '"billing": 2' in done.stdout
        topics = agentbus("topics", "--json", "--url", url, cwd=tmp_path)
        info = {t["topic"]: t for t in json.loads(topics.stdout)}
        assert info["desk.tickets"]["length"] == 4
        assert info["desk.tickets"]["groups"] == [
            {"name": "triage", "consumers": 1, "pending": 0, "lag": 0}
        ]
        runs = json.loads(agentbus("runs", "--json", "--url", url, cwd=tmp_path).stdout)
        assert runs[0]["name"] == "support-desk"
        assert runs[0]["events"] == 16
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=20)
    assert worker.returncode == 0
    assert "stopped" in out
