"""`agentbus runs prune` end to end, in real subprocesses, on SQLite and on Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentbus.errors import UsageError
from agentbus.retention import parse_duration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support_desk.py"


def agentbus(*args: str, cwd: Path, url: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = [] if url is None else ["--url", url]
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args, *extra],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AGENTBUS_URL": ""},
    )


def check_prune(tmp_path: Path, url: str | None) -> None:
    done = agentbus("run", str(EXAMPLE), cwd=tmp_path, url=url)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split("run id: ")[1].split()[0]

    kept = agentbus("runs", "prune", "--older-than", "7d", cwd=tmp_path, url=url)
    assert kept.returncode == 0, kept.stderr
    assert "pruned 0 runs with nothing recorded for 7d" in kept.stdout
    assert "support-desk" in agentbus("runs", cwd=tmp_path, url=url).stdout

    pruned = agentbus("runs", "prune", "--older-than", "0s", "--json", cwd=tmp_path, url=url)
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout) == {"pruned": [run_id]}
    assert json.loads(agentbus("runs", "--json", cwd=tmp_path, url=url).stdout) == []
    gone = agentbus("trace", run_id, cwd=tmp_path, url=url)
    assert gone.returncode == 2
    assert "no recorded run" in gone.stderr


def test_runs_prune_on_the_embedded_journal(tmp_path: Path) -> None:
    check_prune(tmp_path, None)


@pytest.mark.redis
def test_runs_prune_on_redis(redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    check_prune(tmp_path, f"{redis_url}?prefix={redis_prefix}")


def test_runs_prune_needs_a_valid_duration(tmp_path: Path) -> None:
    bad = agentbus("runs", "prune", "--older-than", "7x", cwd=tmp_path)
    assert bad.returncode == 2
    assert "invalid duration '7x'" in bad.stderr
    missing = agentbus("runs", "prune", cwd=tmp_path)
    assert missing.returncode == 2
    assert "--older-than" in missing.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800.0), ("12h", 43_200.0), ("7d", 604_800.0), ("2w", 1_209_600.0), ("45", 45.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7 days", "-1d", "d", "1.d"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="invalid duration"):
        parse_duration(text)


def test_worker_journal_retention_is_checked(tmp_path: Path) -> None:
    bad = subprocess.run(
        [
            *(sys.executable, "-m", "agentbus", "worker", "examples.support_desk:app"),
            *("--url", "memory://?journal=", "--journal-retention", "soon"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "invalid duration 'soon'" in bad.stderr
