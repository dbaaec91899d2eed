"""Two `agentbus worker` processes share one run's model-call budget (real subprocesses).

Each process reserves its calls in the run's hash on Redis; together they make exactly
the limit's number of live calls, and every other event is refused and dead-lettered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbus import Budget, Message, Runtime
from agentbus.testing import wait_for
from agentbus.testing.workers import WorkerProcesses

pytestmark = [pytest.mark.redis, pytest.mark.slow]

APP = str(Path(__file__).with_name("budget_app.py")) + ":app"
ASKS, LIMIT = 40, 12


class Ask(Message, type="bud.Ask"):  # the app's event, as a client declares it
    n: int


@pytest.fixture
def workers(redis_url: str, redis_prefix: str) -> Iterator[WorkerProcesses]:
    with WorkerProcesses(f"{redis_url}?prefix={redis_prefix}", APP) as w:
        yield w


async def test_two_workers_never_pass_the_runs_model_call_limit(
    workers: WorkerProcesses,
) -> None:
    workers.start(consumer="w1")
    workers.start(consumer="w2")
    async with Runtime(workers.url) as rt:
        async with rt.run("shared-budget", budget=Budget(model_calls=LIMIT)) as run:
            for n in range(ASKS):
                await run.publish("bud.asks", Ask(n=n))

        async def all_ended() -> bool:
            records = await rt.journal.records(run.run_id)
            ended = [r for r in records if r.kind in ("handled", "dead_lettered")]
            return len(ended) >= ASKS

        await wait_for(all_ended, timeout=30, message=f"{ASKS} deliveries ended")
        records = await rt.journal.records(run.run_id)
        calls = [r.record for r in records if r.kind == "model_call"]
        live = [c for c in calls if not c.get("error")]
        assert len(live) == LIMIT
        assert len([r for r in records if r.kind == "handled"]) == LIMIT
        dead = [r.record for r in records if r.kind == "dead_lettered"]
        assert len(dead) == ASKS - LIMIT
        assert {d["reason"] for d in dead} == {"budget exceeded"}
        refusals = [r.record for r in records if r.kind == "budget_exceeded"]
        assert len(refusals) == ASKS - LIMIT
        assert {r["limit"] for r in refusals} == {"model_calls"}
        # both processes took part (each event's delivery names its consumer)
        consumers = {r.record.get("consumer") for r in records if r.kind == "delivered"}
        assert consumers == {"w1", "w2"}
        spent = await rt.transport.store.reserve(run.run_id, {}, {"model_calls": LIMIT})
        assert spent.spent == {"model_calls": LIMIT}
        assert (await rt.journal.run(run.run_id)).status == "budget_exceeded"
