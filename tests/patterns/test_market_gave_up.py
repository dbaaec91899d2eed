"""A winner that gives a contract up (``ContractFailed``) reports it through the market's
protocol: the task is re-auctioned at once, without retries, dead letters or warnings."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from agentbus import Context, Runtime
from agentbus.patterns.market import (
    Auctioneer,
    Bidder,
    Contract,
    ContractFailed,
    Decline,
    Ledger,
    MarketJob,
    MarketOutcome,
    MarketTask,
    Quote,
)

MARKET = "gu"


class Worker(Bidder):
    market = MARKET

    def __init__(self, name: str, rate: float, gives_up: bool = False) -> None:
        super().__init__(name=name)
        self.rate, self.gives_up = rate, gives_up
        self.performed = 0

    async def quote(self, task: MarketTask, ledger: Ledger, ctx: Context) -> Quote | Decline:
        return Quote(cost=self.rate * task.effort)

    async def perform(self, contract: Contract, ctx: Context) -> dict[str, Any]:
        self.performed += 1
        if self.gives_up:
            raise ContractFailed(f"{self.name} is booked")
        return {"by": self.name}


async def test_a_winner_giving_up_is_reauctioned_without_retry_or_dead_letter(
    url_for: str, caplog: pytest.LogCaptureFixture
) -> None:
    cheap, dear = Worker("cheap", rate=1, gives_up=True), Worker("dear", rate=5)
    rt = Runtime(url_for, retry_backoff=(0.01, 0.02), grace_period=0.3)
    auctioneer = Auctioneer(MARKET, ["cheap", "dear"], bid_timeout=5, contract_timeout=5)
    rt.add(auctioneer, cheap, dear)
    with caplog.at_level(logging.INFO):
        async with rt:
            async with rt.run("gave-up") as run:
                job = MarketJob(tasks=[MarketTask(id="t1", skill="x")])
                outcome = await run.request(auctioneer.topic, job, expect=MarketOutcome, timeout=30)
            dead = await rt.transport.admin.dead_letters(f"market.{MARKET}.bidder.cheap")

    (result,) = outcome.results
    assert result.status == "completed"
    assert result.winner == "dear"
    assert [(a.winner, a.outcome, a.detail) for a in result.attempts] == [
        ("cheap", "failed", "gave up: cheap is booked"),
        ("dear", "completed", ""),
    ]
    assert outcome.ledgers["cheap"].failed == 1
    assert cheap.performed == 1  # an outcome, not an error: never retried
    assert dead == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("cheap gave up t1-a1: cheap is booked" in r.getMessage() for r in caplog.records)
