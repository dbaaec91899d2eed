"""``request(..., expect=X)`` is typed ``X`` for a type checker (mypy run on a snippet)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = """
from typing import Any, assert_type

from agentbus import Context, Message, Run, Runtime


class Ask(Message, type="typing.Ask"):
    text: str


class Answer(Message, type="typing.Answer"):
    text: str


async def check(rt: Runtime, run: Run, ctx: Context) -> None:
    assert_type(await rt.request("t", Ask(text="q"), expect=Answer), Answer)
    assert_type(await run.request("t", Ask(text="q"), expect=Answer), Answer)
    assert_type(await ctx.request("t", Ask(text="q"), expect=Answer), Answer)
    assert_type(await rt.request("t", Ask(text="q")), Any)
    reveal_type(await ctx.runtime.request("t", Ask(text="q"), expect=Answer))
"""


def test_request_with_expect_returns_the_expected_type(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent(SNIPPET), encoding="utf-8")
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    command += ["--follow-imports=silent", "--cache-dir", str(tmp_path / "cache"), str(snippet)]
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=110, cwd=tmp_path, env=env
    )
    # assert_type fails the run when a type differs; reveal_type shows the Bus's answer.
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'Revealed type is "snippet.Answer"' in done.stdout, done.stdout
