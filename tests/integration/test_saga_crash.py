"""SIGKILL the worker holding a saga's coordinator at each step boundary: every saga ends
completed or fully compensated, never half, and no booking or cancellation runs twice.

The coordinator runs in ``agentbus worker`` subprocesses on a real Redis; the booking
agents run in the test's runtime and count every action they perform. At the chosen
moment (a booking or cancellation just done) the coordinator's worker is killed and a
fresh one started: it resumes the saga from the journal.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from saga_app import KINDS, TOPIC

from agentbus import Context, Runtime
from agentbus.patterns.saga import Compensate, SagaJob, SagaOutcome, SagaParticipant, StepRequest
from agentbus.testing import wait_for
from agentbus.testing.workers import WorkerProcesses

pytestmark = [pytest.mark.redis, pytest.mark.slow]

APP = f"{Path(__file__).with_name('saga_app.py')}:app"


class Ledger:
    """Every booking system's actions, counted, and what stays booked."""

    def __init__(self, failing: str | None, kill_on: str) -> None:
        self.failing = failing
        self.kill_on = kill_on
        self.actions: Counter[str] = Counter()
        self.booked: set[str] = set()
        self.moment = asyncio.Event()

    def agent(self, kind: str) -> SagaParticipant:
        def book(request: StepRequest, ctx: Context) -> dict[str, str]:
            self.actions[f"book {kind}"] += 1
            if kind == self.failing:
                raise RuntimeError(f"no {kind} available")
            self.booked.add(kind)
            self._reached(f"book {kind}")
            return {"ref": f"{kind}-{request.saga_id}"}

        def cancel(request: Compensate, ctx: Context) -> None:
            self.actions[f"cancel {kind}"] += 1
            self.booked.discard(kind)
            self._reached(f"cancel {kind}")

        return SagaParticipant(
            name=f"{kind}s", topic=f"sagacrash.{kind}s", action=book, compensate=cancel
        )

    def _reached(self, what: str) -> None:
        if what == self.kill_on:
            self.moment.set()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("failing", "kill_on"),
    [
        ("car", "book flight"),
        ("car", "book hotel"),
        ("car", "cancel hotel"),
        ("car", "cancel flight"),
        (None, "book hotel"),
        (None, "book car"),
    ],
)
async def test_a_saga_survives_its_coordinator_killed_at_a_step_boundary(
    redis_url: str, redis_prefix: str, failing: str | None, kill_on: str
) -> None:
    url = f"{redis_url}?prefix={redis_prefix}"
    ledger = Ledger(failing, kill_on)
    with WorkerProcesses(url, APP) as workers:
        workers.start(consumer="victim")
        async with Runtime(url, retry_backoff=(0.01, 0.05)) as rt:
            rt.add(*(ledger.agent(kind) for kind in KINDS))
            await rt.ready()

            async def kill_at_the_moment() -> None:
                await ledger.moment.wait()
                workers.kill("victim")
                workers.start(consumer="fresh", extra=("--visibility-timeout", "1"))

            killer = asyncio.create_task(kill_at_the_moment())
            async with rt.run("saga-crash") as run:
                outcome = await run.request(
                    TOPIC, SagaJob(saga_id="s1", data={}), expect=SagaOutcome, timeout=90
                )
            await asyncio.wait_for(killer, 5)
            records = await rt.journal.records(run.run_id)

            async def planner_handled() -> bool:
                return any(
                    r.kind == "handled" and r.record.get("agent") == "trip-planner"
                    for r in await rt.journal.records(run.run_id)
                )

            await wait_for(planner_handled, timeout=10, message="the saga's handled record")
            records = await rt.journal.records(run.run_id)

    consumers = [
        r.record["consumer"]
        for r in records
        if r.kind == "delivered" and r.record.get("agent") == "trip-planner"
    ]
    assert consumers == ["victim", "fresh"]  # the kill hit the coordinator mid-saga
    if failing is None:
        assert outcome.status == "completed"
        assert ledger.booked == set(KINDS)
        assert ledger.actions == {f"book {k}": 1 for k in KINDS}
    else:
        assert outcome.status == "compensated"
        assert outcome.compensated == ["hotel", "flight"]
        assert ledger.booked == set()  # nothing left half booked
        # Each booking and cancellation ran once (the failing car: its 3 attempts).
        assert ledger.actions == {
            "book flight": 1,
            "book hotel": 1,
            "book car": 3,
            "cancel hotel": 1,
            "cancel flight": 1,
        }
