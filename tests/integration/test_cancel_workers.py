"""`agentbus cancel RUN` stops the run's handlers in two `agentbus worker` processes.

Real subprocesses on a real Redis: the workers learn of the cancel from the run's status
in the store (their poll), not from the command's process.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from agentbus import Runtime
from agentbus.testing import wait_for
from agentbus.testing.workers import WorkerProcesses, run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]

APP = str(Path(__file__).with_name("cancel_app.py")) + ":app"
_spec = importlib.util.spec_from_file_location(
    "cancel_app", Path(__file__).with_name("cancel_app.py")
)
assert _spec is not None
assert _spec.loader is not None
cancel_app = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cancel_app)
Nap = cancel_app.Nap


def _lines(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split() for line in log.read_text().splitlines()]


async def test_agentbus_cancel_stops_handlers_in_every_worker(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    url = f"{redis_url}?prefix={redis_prefix}"
    log = tmp_path / "naps.log"
    env = {"CANCEL_LOG": str(log)}
    with WorkerProcesses(url, APP) as workers:
        workers.start(consumer="w1", env=env)
        workers.start(consumer="w2", env=env)
        async with Runtime(url) as rt:
            run = rt.run("to-cancel")
            await run.begin()
            for n in range(3):  # each worker: one sleeping, two queued behind it
                await run.publish("cxmp.naps", Nap(n=n))
            await wait_for(
                lambda: len([w for w in _lines(log) if w[0] == "started"]) == 2,
                timeout=20,
                message="a handler sleeping in each worker",
            )
            done = run_cli("cancel", run.run_id[:12], "--url", url)
            returned = time.time()
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"cancelled run {run.run_id}" in done.stdout

            def stopped() -> list[list[str]]:
                return [w for w in _lines(log) if w[0] != "started"]

            await wait_for(lambda: len(stopped()) == 2, timeout=10, message="both stopped")
            assert sorted((w[0], w[3]) for w in stopped()) == [
                ("cancelled", "w1"),
                ("cancelled", "w2"),
            ]
            last = max(float(w[4]) for w in stopped())
            print(f"\ncommand exit -> last handler stopped: {(last - returned) * 1000:.0f} ms")
            assert last - returned < 2.0

            async def skipped() -> bool:
                records = [r.record for r in await rt.transport.store.read_journal(run.run_id)]
                return len([r for r in records if r.get("reason") == "run cancelled"]) == 6

            # Per worker: the one cancelled and the two queued, each acked as cancelled.
            await wait_for(skipped, timeout=10, message="6 deliveries recorded as cancelled")
            records = [r.record for r in await rt.transport.store.read_journal(run.run_id)]
            assert not [r for r in records if r["kind"] in ("handled", "failed")]
            assert [r["status"] for r in records if r["kind"] == "run_finished"] == ["cancelled"]
            info = await rt.transport.store.get_run(run.run_id)
            assert info is not None
            assert info.status == "cancelled"
            assert len([w for w in _lines(log) if w[0] == "started"]) == 2  # no more started

            again = run_cli("cancel", run.run_id, "--url", url)
            assert again.returncode == 1
            assert "already ended (cancelled)" in again.stdout
        unknown = run_cli("cancel", "no-such-run", "--url", url)
        assert unknown.returncode == 2, unknown.stdout + unknown.stderr
        assert "no recorded run" in unknown.stderr + unknown.stdout
