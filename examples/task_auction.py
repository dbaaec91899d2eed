"""A task auction: freelancers with different skills, capacity and rates bid for a project's tasks.

Contract-net on the ``studio`` market: the auctioneer calls for proposals for each task, every
freelancer bids or declines, the award goes by the task's strategy (lowest cost, best score or
second price), and the winner does the work. Each freelancer prices from its event-sourced
ledger: every contract in progress adds 30% (load) and it declines work beyond its capacity
(budget). Eve is cheap but drops tasks bigger than 2 days, so her task is re-auctioned without
her; nobody can do the legal review; the one translator asks more than the e-mail task's reserve.

Plain Python, no model needed:

    agentbus run examples/task_auction.py
"""

from __future__ import annotations

from functools import partial
from typing import Any

from agentbus import App, Context, Message, Run
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
    market_topics,
)

MARKET = "studio"
LOAD_SURCHARGE = 0.3


class Freelancer(Bidder):
    """Bids ``rate`` per day of effort on tasks matching its skills, plus a load surcharge."""

    market = MARKET

    def __init__(
        self,
        name: str,
        skills: dict[str, float],
        rate: float,
        capacity: float,
        max_task: float = 99,
    ) -> None:
        super().__init__(name=name)
        self.skills = skills
        self.rate = rate
        self.capacity = capacity
        self.max_task = max_task

    async def quote(self, task: MarketTask, ledger: Ledger, ctx: Context) -> Quote | Decline:
        if task.skill not in self.skills:
            return Decline(f"no {task.skill} skill")
        if ledger.used + task.effort > self.capacity:
            return Decline(f"over capacity: {ledger.used:g} of {self.capacity:g} days taken")
        surcharge = 1 + LOAD_SURCHARGE * ledger.active
        note = f"{self.rate:g}/day x {task.effort:g} days"
        if ledger.active:
            note += f" +{LOAD_SURCHARGE * ledger.active:.0%} for {ledger.active} open contract(s)"
        return Quote(
            cost=round(self.rate * task.effort * surcharge, 2),
            score=self.skills[task.skill],
            note=note,
        )

    async def perform(self, contract: Contract, ctx: Context) -> dict[str, Any]:
        task = contract.task
        if task.effort > self.max_task:
            # An expected outcome, reported to the auctioneer: not an error to retry.
            raise ContractFailed(f"{self.name} dropped {task.id}: {task.effort:g} days is too big")
        return {
            "deliverable": f"{task.description} ({task.skill}, {task.effort:g} days)",
            "summary": f"{self.name} delivered {task.id} for {contract.price:g}",
        }


# Factories, not instances: each runtime hosting the app gets fresh agents.
TEAM = [
    partial(Freelancer, "alice", {"backend": 0.9, "testing": 0.8}, rate=40, capacity=8),
    partial(Freelancer, "bob", {"backend": 0.7, "design": 0.6}, rate=30, capacity=6),
    partial(Freelancer, "carol", {"design": 0.9, "translation": 0.95}, rate=45, capacity=10),
    partial(Freelancer, "dave", {"testing": 0.7, "security": 0.9}, rate=55, capacity=4),
    partial(Freelancer, "eve", {"backend": 0.6, "testing": 0.5}, rate=25, capacity=10, max_task=2),
]
BIDDERS = [f.args[0] for f in TEAM]


TASKS = [
    MarketTask(id="T1", skill="backend", effort=3, description="fix the login bug"),
    MarketTask(id="T2", skill="backend", effort=2, description="add API rate limiting"),
    MarketTask(id="T3", skill="design", effort=3, description="redesign the landing page", strategy="best_score"),
    MarketTask(id="T4", skill="translation", effort=2, description="translate the docs to German", strategy="second_price"),
    MarketTask(id="T5", skill="security", effort=3, description="review payments security", max_price=200),
    MarketTask(id="T6", skill="testing", effort=2, description="end-to-end tests for checkout"),
    MarketTask(id="T7", skill="legal", effort=1, description="review the terms of service"),
    MarketTask(id="T8", skill="translation", effort=1, description="translate checkout e-mails", max_price=40),
]  # fmt: skip


class AuctionReport(Message, type="studio.AuctionReport"):
    awards: list[str]
    ledgers: list[str]
    by_status: dict[str, list[str]]


def report(outcome: MarketOutcome) -> AuctionReport:
    """One line per task (who won what, for how much, why) and per freelancer's ledger."""
    lines = []
    for r in outcome.results:
        failed = [f"{a.winner} failed ({a.detail})" for a in r.attempts if a.outcome == "failed"]
        head = f"{r.task_id} {next(t.description for t in TASKS if t.id == r.task_id)}"
        if r.status == "completed":
            line = f"{head} -> {r.winner} for {r.price:g}: {r.reason}"
        else:
            line = f"{head} -> {r.status.upper()}: {r.reason or r.attempts[-1].reason}"
        lines.append(line + (f" [re-auctioned after {'; '.join(failed)}]" if failed else ""))
    ledgers = [
        f"{name}: won {lg.won}, delivered {lg.completed}, failed {lg.failed}, "
        f"{lg.used:g} days used, earned {lg.earned:g}"
        for name, lg in outcome.ledgers.items()
    ]
    return AuctionReport(awards=lines, ledgers=ledgers, by_status=outcome.by_status())


app = App(
    "task-auction",
    [lambda: Auctioneer(MARKET, BIDDERS, bid_timeout=5, contract_timeout=10), *TEAM],
)


@app.main
async def main(run: Run) -> AuctionReport:
    job = MarketJob(tasks=TASKS)
    outcome = await run.request(
        market_topics(MARKET)["jobs"], job, expect=MarketOutcome, timeout=120
    )
    return report(outcome)
