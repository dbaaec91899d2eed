"""Conformance checks of :meth:`JournalStore.reserve`: a run's budget spend."""

from __future__ import annotations

import asyncio

import pytest

from ...transports import RunInfo, Transport

__all__ = ["BudgetChecks"]


class BudgetChecks:
    """Spend counters: all-or-nothing reservations, atomic across concurrent callers."""

    async def test_reserve_is_all_or_nothing(self, transport: Transport) -> None:
        store = transport.store
        await store.save_run(RunInfo("run-b1", "budgeted", started=100.0))
        got = await store.reserve("run-b1", {"calls": 1, "tokens": 30}, {"calls": 2, "tokens": 50})
        assert got.granted
        assert got.spent == {"calls": 1, "tokens": 30}
        # tokens would pass its limit: nothing is added, calls included
        got = await store.reserve("run-b1", {"calls": 1, "tokens": 30}, {"calls": 2, "tokens": 50})
        assert not got.granted
        assert got.over == "tokens"
        assert got.spent == {"calls": 1, "tokens": 30}
        # settling adds without limits (and may pass them); amounts may be negative
        got = await store.reserve("run-b1", {"tokens": 25.5, "cost": 0.25}, {})
        assert got.granted
        assert got.spent == {"tokens": 55.5, "cost": 0.25}
        got = await store.reserve("run-b1", {"tokens": -0.5}, {})
        assert got.spent == {"tokens": 55.0}
        # a counter at or over its limit refuses even an amount of 0
        got = await store.reserve("run-b1", {"calls": 1, "tokens": 0}, {"tokens": 55})
        assert not got.granted
        assert got.over == "tokens"
        # reading: no amounts
        got = await store.reserve("run-b1", {}, {"calls": 10, "cost": 1})
        assert got.granted
        assert got.spent == {"calls": 1, "cost": 0.25}
        assert (await store.reserve("run-other", {}, {"calls": 1})).spent == {"calls": 0}
        run = await store.get_run("run-b1")
        assert run is not None
        assert run.status == "running"  # spend is not metadata: a save keeps it
        await store.save_run(RunInfo("run-b1", "budgeted", status="completed", started=100.0))
        assert (await store.reserve("run-b1", {}, {"calls": 2})).spent == {"calls": 1}

    @pytest.mark.parametrize("callers", [50])
    async def test_reserve_is_atomic_under_concurrency(
        self, transport: Transport, callers: int
    ) -> None:
        store = transport.store
        await store.save_run(RunInfo("run-b2", "budgeted", started=100.0))
        results = await asyncio.gather(
            *(store.reserve("run-b2", {"calls": 1}, {"calls": 10}) for _ in range(callers))
        )
        assert sum(r.granted for r in results) == 10
        assert {r.over for r in results if not r.granted} == {"calls"}
        assert (await store.reserve("run-b2", {}, {})).spent == {}
        assert (await store.reserve("run-b2", {"calls": 0}, {})).spent == {"calls": 10}
