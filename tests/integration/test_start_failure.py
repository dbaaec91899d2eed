"""A start that fails part-way stops what it started: the CLI exits with one error line.

The second agent's consumer group cannot be created (its topic's stream key holds a
string). Before the fix, `agentbus run` hung about one time in four: asyncio.run's final
cancel of the first agent's read loop was swallowed inside redis-py (asyncio.wait_for on
Python 3.11) and the loop read on forever.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from agentbus import Keys
from agentbus.testing.workers import run_cli

pytestmark = pytest.mark.redis

APP = """
from agentbus import Agent, App, Context, Message, handle

class Job(Message, type="sf.Job"):
    n: int

class First(Agent, name="sf-first"):
    @handle("sf.first")
    async def work(self, job: Job, ctx: Context) -> None:
        return None

class Second(Agent, name="sf-second"):
    @handle("sf.second")
    async def work(self, job: Job, ctx: Context) -> None:
        return None

app = App("sf", [First, Second])

@app.main
async def main(run):
    return "unreachable"
"""


@pytest.mark.parametrize(("command", "times"), [("run", 10), ("worker", 3)])
def test_failed_start_exits_promptly_with_one_error_line(
    tmp_path: Path, redis_url: str, redis_prefix: str, command: str, times: int
) -> None:
    app = tmp_path / "sf_app.py"
    app.write_text(APP)
    r = redis.Redis.from_url(redis_url)
    r.set(Keys(redis_prefix).topic("sf.second"), "not a stream")
    r.close()
    url = f"{redis_url}?prefix={redis_prefix}"
    target = str(app) if command == "run" else f"{app}:app"
    for _ in range(times):
        started = time.monotonic()
        done = run_cli(command, target, "--url", url, timeout=20)  # a hang raises here
        took = time.monotonic() - started
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("agentbus: error: ")
        assert "WRONGTYPE" in lines[0]
        assert took < 8, f"took {took:.1f}s"
