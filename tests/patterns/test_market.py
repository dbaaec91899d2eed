"""The market coordinator on every transport: awards by strategy, load-shaped bids, re-auction
of failed or silent winners, no bids, reserve prices, ledgers rebuilt from the journal, and the
task-auction example."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agentbus import Agent, Context, Runtime, UsageError
from agentbus.patterns.market import (
    Auctioneer,
    Bid,
    Bidder,
    Contract,
    Decline,
    Ledger,
    LedgerEvent,
    Ledgers,
    MarketJob,
    MarketOutcome,
    MarketTask,
    Quote,
    best_score,
    lowest_cost,
    market_topics,
    rebuild_ledgers,
    second_price,
)

MARKET = "m"
JOBS = market_topics(MARKET)["jobs"]


class Worker(Bidder):
    """Bids ``rate`` x effort, +50% per open contract; declines without the skill or capacity."""

    market = MARKET

    def __init__(
        self,
        name: str,
        skills: dict[str, float],
        rate: float,
        capacity: float = 100,
        fail: str | None = None,
        hang: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.skills, self.rate, self.capacity = skills, rate, capacity
        self.fail, self.hang = fail, hang
        self.awards: list[tuple[str, bool]] = []

    async def quote(self, task: MarketTask, ledger: Ledger, ctx: Context) -> Quote | Decline:
        if task.skill not in self.skills:
            return Decline(f"no {task.skill}")
        if ledger.used + task.effort > self.capacity:
            return Decline("full")
        return Quote(
            cost=self.rate * task.effort * (1 + 0.5 * ledger.active), score=self.skills[task.skill]
        )

    async def perform(self, contract: Contract, ctx: Context) -> dict[str, Any]:
        if contract.task.id == self.fail:
            raise RuntimeError(f"{self.name} broke down")
        if contract.task.id == self.hang:
            await asyncio.sleep(1.0)  # far past the auctioneer's contract_timeout
        return {"by": self.name, "task": contract.task.id}

    async def notified(self, award: Any, won: bool, ctx: Context) -> None:
        self.awards.append((award.task_id, won))


@asynccontextmanager
async def hosting(url: str, *agents: Agent) -> AsyncIterator[Runtime]:
    rt = Runtime(url, retry_backoff=(0.01, 0.02), grace_period=0.3)
    rt.add(*agents)
    async with rt:
        yield rt


async def run_market(
    url: str, auctioneer: Auctioneer, bidders: Sequence[Agent], tasks: list[MarketTask]
) -> tuple[MarketOutcome, str]:
    async with hosting(url, auctioneer, *bidders) as rt:
        async with rt.run("market") as run:
            outcome = await run.request(
                JOBS, MarketJob(tasks=list(tasks)), expect=MarketOutcome, timeout=30
            )
        await rt.idle()
        steps = [r.record for r in await rt.journal.records(run.run_id) if r.kind == "step"]
        rebuilt = await rebuild_ledgers(rt.journal, run.run_id, MARKET)
    # Ledgers are the fold of the run's ledger events; the outcome adds idle bidders.
    assert {k: v for k, v in outcome.ledgers.items() if v != Ledger(agent=k)} == rebuilt.snapshot()
    return outcome, str(steps)


def auctioneer(bidders: list[str], **options: Any) -> Auctioneer:
    options.setdefault("bid_timeout", 5.0)
    options.setdefault("contract_timeout", 5.0)
    return Auctioneer(MARKET, bidders, **options)


def team(**extra: Any) -> list[Agent]:
    return [
        Worker("ann", {"code": 0.9, "test": 0.6}, rate=10, **extra.get("ann", {})),
        Worker("ben", {"code": 0.7}, rate=8, **extra.get("ben", {})),
        Worker("cat", {"design": 0.8, "code": 0.95}, rate=14, **extra.get("cat", {})),
    ]


async def test_awards_by_strategy_and_load_shapes_later_bids(url_for: str) -> None:
    bidders = team()
    tasks = [
        MarketTask(id="t1", skill="code", effort=2),
        MarketTask(id="t2", skill="code", effort=2),  # ben now has an open contract: 8*2*1.5 = 24
        MarketTask(id="t3", skill="code", effort=1, strategy="best_score"),
        MarketTask(id="t4", skill="code", effort=1, strategy="second_price"),
    ]
    outcome, steps = await run_market(url_for, auctioneer(["ann", "ben", "cat"]), bidders, tasks)
    won = {r.task_id: (r.winner, r.price) for r in outcome.results}
    assert won["t1"] == ("ben", 16)
    assert won["t2"] == ("ann", 20)  # ben's load priced him out (24)
    assert won["t3"] == ("cat", 14)  # best score 0.95
    # t4: ann 10*1.5=15, ben 8*1.5=12, cat 14*1.5=21 -> ben wins, paid the runner-up's 15
    assert won["t4"] == ("ben", 15)
    assert all(r.status == "completed" for r in outcome.results)
    assert outcome.results[0].result == {"by": "ben", "task": "t1"}
    assert outcome.ledgers["ben"].won == 2
    assert outcome.ledgers["ben"].earned == 31
    assert outcome.ledgers["ben"].active == 0
    assert outcome.ledgers["ben"].spent == 3
    for step in ("job-opened", "bids-collected", "awarded", "contract-completed", "job-closed"):
        assert f"'step': '{step}'" in steps
    ben = bidders[1]
    assert isinstance(ben, Worker)
    assert sorted(ben.awards) == [("t1", True), ("t2", False), ("t3", False), ("t4", True)]


async def test_a_failing_winner_is_excluded_and_the_task_reauctioned(url_for: str) -> None:
    bidders = team(ben={"fail": "t1"})
    outcome, steps = await run_market(
        url_for, auctioneer(["ann", "ben", "cat"]), bidders, [MarketTask(id="t1", skill="code")]
    )
    result = outcome.results[0]
    assert result.status == "completed"
    assert result.winner == "ann"
    assert [(a.auction_id, a.winner, a.outcome) for a in result.attempts] == [
        ("t1-a1", "ben", "failed"),
        ("t1-a2", "ann", "completed"),
    ]
    assert "ben broke down" in result.attempts[0].detail
    second = {b.bidder: b for b in result.attempts[1].bids}
    assert second["ben"].declined
    assert "excluded" in second["ben"].note
    assert outcome.ledgers["ben"].failed == 1
    assert outcome.ledgers["ben"].active == 0
    assert "'step': 're-auction'" in steps


async def test_a_winner_that_times_out_is_reauctioned(url_for: str) -> None:
    bidders = team(ben={"hang": "t1"})
    ctl = auctioneer(["ann", "ben", "cat"], contract_timeout=0.3)
    outcome, _ = await run_market(url_for, ctl, bidders, [MarketTask(id="t1", skill="code")])
    result = outcome.results[0]
    assert result.winner == "ann"
    assert result.attempts[0].detail == "timed out after 0.3s"


async def test_every_winner_failing_ends_the_task_as_failed(url_for: str) -> None:
    bidders = [
        Worker("ann", {"code": 1}, rate=1, fail="t1"),
        Worker("ben", {"code": 1}, rate=2, fail="t1"),
    ]
    outcome, _ = await run_market(
        url_for,
        auctioneer(["ann", "ben"], max_attempts=2),
        bidders,
        [MarketTask(id="t1", skill="code")],
    )
    result = outcome.results[0]
    assert result.status == "failed"
    assert [a.winner for a in result.attempts] == ["ann", "ben"]
    assert "every winner failed" in result.reason


async def test_a_failed_task_nobody_else_can_do_ends_failed(url_for: str) -> None:
    bidders = [Worker("ann", {"code": 1}, rate=1, fail="t1"), Worker("ben", {"art": 1}, rate=1)]
    outcome, _ = await run_market(
        url_for, auctioneer(["ann", "ben"]), bidders, [MarketTask(id="t1", skill="code")]
    )
    result = outcome.results[0]
    assert result.status == "failed"
    assert [a.outcome for a in result.attempts] == ["failed", "no_bids"]
    assert result.reason == (
        "nobody bid — declined: ann (excluded: failed this task before), ben (no code)"
    )


async def test_no_bids_is_a_clear_outcome(url_for: str) -> None:
    outcome, steps = await run_market(
        url_for,
        auctioneer(["ann", "ben", "cat"]),
        team(),
        [MarketTask(id="law", skill="legal"), MarketTask(id="cheap", skill="design", max_price=5)],
    )
    law, cheap = outcome.results
    assert law.status == "no_bids"
    assert law.winner is None
    assert law.reason == "nobody bid — declined: ann (no legal), ben (no legal), cat (no legal)"
    assert cheap.status == "no_bids"
    assert "over the reserve price: cat" in cheap.reason
    assert "'step': 'no-bids'" in steps
    assert outcome.by_status() == {"no_bids": ["law", "cheap"]}


async def test_a_silent_bidder_is_waited_for_until_the_deadline(url_for: str) -> None:
    # "ghost" is registered but never hosted, like a bidder whose process died.
    ctl = auctioneer(["ann", "ghost"], bid_timeout=0.2)
    outcome, _ = await run_market(
        url_for, ctl, [Worker("ann", {"code": 1}, rate=3)], [MarketTask(id="t1", skill="code")]
    )
    assert outcome.results[0].winner == "ann"
    assert outcome.results[0].attempts[0].silent == ["ghost"]


class Broken(Worker):
    async def quote(self, task: MarketTask, ledger: Ledger, ctx: Context) -> Quote | Decline:
        raise ValueError("price list missing")


async def test_a_bidder_that_crashes_while_pricing_declines_at_once(url_for: str) -> None:
    ctl = auctioneer(["ann", "bad"], bid_timeout=60)
    bidders = [Worker("ann", {"code": 1}, rate=3), Broken("bad", {"code": 1}, rate=1)]
    async with hosting(url_for, ctl, *bidders) as rt, rt.run("market") as run:
        # Would take a minute if the auction waited for its deadline.
        job = MarketJob(tasks=[MarketTask(id="t1", skill="code")])
        outcome = await run.request(JOBS, job, expect=MarketOutcome, timeout=20)
    attempt = outcome.results[0].attempts[0]
    assert outcome.results[0].winner == "ann"
    assert [b.note for b in attempt.bids if b.bidder == "bad"] == [
        "error: ValueError: price list missing"
    ]


async def test_capacity_from_the_ledger_makes_a_bidder_decline(url_for: str) -> None:
    bidders = [Worker("ann", {"code": 1}, rate=1, capacity=3), Worker("ben", {"code": 1}, rate=5)]
    tasks = [MarketTask(id=f"t{i}", skill="code", effort=2) for i in range(1, 4)]
    outcome, _ = await run_market(url_for, auctioneer(["ann", "ben"]), bidders, tasks)
    assert [r.winner for r in outcome.results] == ["ann", "ben", "ben"]
    notes = {b.bidder: b.note for b in outcome.results[1].attempts[0].bids}
    assert notes["ann"] == "full"


async def test_a_second_job_in_the_run_continues_the_ledgers(url_for: str) -> None:
    bidders = [Worker("ann", {"code": 1}, rate=1, capacity=3), Worker("ben", {"code": 1}, rate=5)]
    ctl = auctioneer(["ann", "ben"])
    async with hosting(url_for, ctl, *bidders) as rt, rt.run("market") as run:
        first = await run.request(
            JOBS,
            MarketJob(tasks=[MarketTask(id="a", skill="code", effort=2)]),
            expect=MarketOutcome,
        )
        second = await run.request(
            JOBS,
            MarketJob(tasks=[MarketTask(id="b", skill="code", effort=2)]),
            expect=MarketOutcome,
        )
    assert first.results[0].winner == "ann"
    assert second.results[0].winner == "ben"  # ann's 2 of 3 days are spent
    assert second.ledgers["ann"].spent == 2


def test_strategies_break_ties_by_name() -> None:
    task = MarketTask(id="t", skill="s")

    def bid(name: str, cost: float, score: float = 0) -> Bid:
        return Bid(market="m", auction_id="a", bidder=name, cost=cost, score=score)

    bids = [bid("zed", 5, 0.5), bid("amy", 5, 0.5), bid("max", 7, 0.9)]
    cheapest = lowest_cost(task, bids)
    assert cheapest is not None
    assert cheapest.winner == "amy"
    award = second_price(task, bids)
    assert award is not None
    assert (award.winner, award.price) == ("amy", 5)
    assert best_score(task, bids).winner == "max"  # type: ignore[union-attr]
    assert best_score(task, bids[:2]).winner == "amy"  # type: ignore[union-attr]
    capped = second_price(MarketTask(id="t", skill="s", max_price=6), [bid("a", 4), bid("b", 9)])
    assert capped is not None
    assert capped.price == 6
    assert lowest_cost(task, []) is None
    with pytest.raises(UsageError, match="unknown award strategy"):
        Auctioneer(MARKET, ["a"], strategy="cheapest")


def test_ledgers_fold_in_sequence_order() -> None:
    def event(seq: int, kind: str) -> LedgerEvent:
        return LedgerEvent.model_validate(
            {"market": "m", "seq": seq, "agent": "a", "kind": kind, "auction_id": "x",
             "task_id": "x", "effort": 0.1, "price": 3}
        )  # fmt: skip

    ledgers = Ledgers.fold("m", [event(2, "completed"), event(1, "awarded")])
    assert ledgers.version == 2
    assert ledgers.get("a") == Ledger(agent="a", spent=0.1, earned=3, won=1, completed=1)
    assert ledgers.get("nobody") == Ledger(agent="nobody")
    with pytest.raises(ValueError, match="does not follow"):
        Ledgers.fold("m", [event(2, "awarded")])


# -- the task-auction example -------------------------------------------------------------------
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "task_auction.py"


async def task_auction(url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec = importlib.util.spec_from_file_location("task_auction_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example
    spec.loader.exec_module(example)
    rt = Runtime(url, retry_backoff=(0.01, 0.02))
    rt.add(*example.app.build_agents())
    async with rt:
        async with rt.run("auction") as run:
            report = await example.main(run)
        await rt.idle()
        records = await rt.journal.records(run.run_id)
    steps = [
        {k: v for k, v in r.record.items() if k not in ("time", "event_id")}
        for r in records
        if r.kind == "step"
    ]
    return report.model_dump(), steps


async def test_task_auction_example(url_for: str) -> None:
    report, _ = await task_auction(url_for)
    awards = report["awards"]
    assert awards[0].startswith("T1 fix the login bug -> bob for 90")
    assert "re-auctioned after eve failed" in awards[0]
    assert awards[1].startswith("T2 add API rate limiting -> bob for 60")  # eve's load: 65
    assert awards[2].startswith("T3 redesign the landing page -> carol")  # best score
    assert "paid as bid" in awards[3]
    assert awards[6].startswith("T7 review the terms of service -> NO_BIDS")
    assert "over the reserve price: carol" in awards[7]
    assert report["by_status"] == {
        "completed": ["T1", "T2", "T3", "T4", "T5", "T6"],
        "no_bids": ["T7", "T8"],
    }


async def test_task_auction_is_identical_on_memory_and_redis(
    redis_url: str, redis_prefix: str
) -> None:
    on_memory = await task_auction("memory://?journal=")
    on_redis = await task_auction(f"{redis_url}?prefix={redis_prefix}")
    assert on_memory == on_redis
