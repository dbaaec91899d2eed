"""No silent dead ends: commands that need Redis say so, user errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbus.testing.workers import run_cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support_desk.py"
NO_URL = {"AGENTBUS_URL": ""}


agentbus = run_cli  # `agentbus ARGS` as a subprocess


def test_a_worker_without_a_url_refuses_with_a_one_line_hint(tmp_path: Path) -> None:
    done = agentbus("worker", f"{EXAMPLE}:app", cwd=tmp_path, env=NO_URL, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "agentbus worker needs Redis" in lines[0]
    assert "--url redis://" in lines[0]
    assert "AGENTBUS_URL" in lines[0]
    assert "hosting" not in done.stdout


@pytest.mark.parametrize(
    "command", [["topics"], ["dlq", "list", "some.topic"], ["prune", "--dry-run"]]
)
def test_topics_and_dlq_on_the_embedded_transport_say_they_need_redis(
    tmp_path: Path, command: list[str]
) -> None:
    done = agentbus(*command, cwd=tmp_path, env=NO_URL)
    assert done.returncode == 2
    assert "needs Redis" in done.stderr
    assert "memory://" in done.stderr
    assert "no topics" not in done.stdout


APP_FAILS = """
from agentbus import App, Run

app = App("fails", [])


@app.main
async def main(run: Run) -> str:
    return helper()


def helper() -> str:
    raise ValueError("the input file has no rows")
"""


def test_an_exception_in_main_is_one_line_and_the_traceback_is_behind_debug(
    tmp_path: Path,
) -> None:
    app = tmp_path / "fails.py"
    app.write_text(APP_FAILS, encoding="utf-8")
    done = agentbus("run", str(app), "--url", "memory://?journal=", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "agentbus: error: ValueError: the input file has no rows "
        "(run with --debug for the traceback)"
    ], done.stderr

    debug = agentbus("--debug", "run", str(app), "--url", "memory://?journal=", cwd=tmp_path)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "in helper" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("agentbus: error: ValueError")
