"""Replay, fork, diff and export/import through the real CLI (the HTML trace: test_html_trace)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support_desk.py"


def agentbus(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "AGENTBUS_URL": ""},
    )


def run_example(path: Path, cwd: Path, *extra: str) -> str:
    done = agentbus("run", str(path), *extra, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("run id: ")[1].split()[0]


def test_replay_of_an_unchanged_app_is_identical_and_recorded(tmp_path: Path) -> None:
    run_id = run_example(EXAMPLE, tmp_path)
    done = agentbus("replay", run_id, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("identical")
    runs = json.loads(agentbus("runs", "--json", cwd=tmp_path).stdout)
    replay = next(r for r in runs if r["meta"].get("replay_of") == run_id)
    assert replay["meta"]["verdict"] == "identical"
    assert replay["events"] == 16


def test_replay_after_changing_a_rule_reports_the_first_divergence(tmp_path: Path) -> None:
    run_id = run_example(EXAMPLE, tmp_path)
    changed = tmp_path / "support_desk_changed.py"
    source = EXAMPLE.read_text()
    assert "Refund issued; it shows up in 3-5 days." in source
    changed.write_text(source.replace("3-5 days", "7 days"))
    done = agentbus("replay", run_id, "--app", f"{changed}:app", "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    div = result["divergence"]
    assert div["reason"] == "desk.Resolution from billing has different content"
    assert div["expected"]["data"]["answer"] == "Refund issued; it shows up in 3-5 days."
    assert div["actual"]["data"]["answer"] == "Refund issued; it shows up in 7 days."
    # The position is that of billing's first refund reply in the recording.
    trace = json.loads(agentbus("trace", run_id, "--json", "--show-payloads", cwd=tmp_path).stdout)

    def walk(nodes: list[dict]) -> list[dict]:
        return [n for node in nodes for n in [node, *walk(node["children"])]]

    refunds = sorted(
        n["index"]
        for n in walk(trace["tree"])
        if n["source"] == "billing" and "Refund" in n["data"]["answer"]
    )
    assert div["position"] == refunds[0]
    text = agentbus("replay", run_id, "--app", f"{changed}:app", cwd=tmp_path)
    assert text.returncode == 1
    assert f"diverged at event #{refunds[0]}" in text.stdout
    assert '-    "answer": "Refund issued; it shows up in 3-5 days."' in text.stdout


def test_diff_of_two_runs(tmp_path: Path) -> None:
    a = run_example(EXAMPLE, tmp_path)
    changed = tmp_path / "desk2.py"
    changed.write_text(
        EXAMPLE.read_text().replace("answer from the FAQ", "answer from the handbook")
    )
    b = run_example(changed, tmp_path)
    same = agentbus("diff", a, a, cwd=tmp_path)
    assert same.returncode == 0
    assert "identical" in same.stdout
    diff = agentbus("diff", a, b, "--json", cwd=tmp_path)
    assert diff.returncode == 1
    d = json.loads(diff.stdout)
    assert d["first"]["reason"] == "desk.Resolution from general has different content"
    assert d["shared"] == 14
    assert len(d["only_in_a"]) == 2
    assert len(d["only_in_b"]) == 2


@pytest.mark.redis
def test_export_import_between_embedded_and_redis_keeps_the_trace(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    run_id = run_example(EXAMPLE, tmp_path)
    out = tmp_path / "run.jsonl"
    assert agentbus("export", run_id, "-o", str(out), cwd=tmp_path).returncode == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(line["specversion"] == "1.0" and line["type"] for line in lines)
    assert sum(1 for line in lines if line["type"] == "desk.Ticket") == 8

    url = f"{redis_url}?prefix={redis_prefix}"
    imported = agentbus("import", str(out), "--url", url, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    again = agentbus("import", str(out), "--url", url, cwd=tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr

    def trace(*extra: str) -> dict:
        done = agentbus("trace", run_id, "--json", "--show-payloads", *extra, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        t = json.loads(done.stdout)
        t["run"].pop("records")  # the embedded store counts records; equal anyway below
        return t

    embedded = trace()
    on_redis = trace("--url", url)
    assert on_redis == embedded

    # And back from Redis into a fresh embedded store.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    out2 = tmp_path / "run2.jsonl"
    assert agentbus("export", run_id, "-o", str(out2), "--url", url, cwd=tmp_path).returncode == 0
    assert agentbus("import", str(out2), cwd=fresh).returncode == 0
    back = json.loads(agentbus("trace", run_id, "--json", "--show-payloads", cwd=fresh).stdout)
    back["run"].pop("records")
    assert back == embedded
