"""One job of an auctioneer: waves of auctions, contracts and re-auctions.

A wave auctions every pending task in job order (so each award's load is on the
ledger before the next call), then runs the wave's contracts concurrently and records
their outcomes, again in job order. Tasks whose winner failed form the next wave.
Keeping every decision in job order is what makes a run repeat exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentbus import Context, RemoteError, RequestTimeout, UsageError

from ._ledger import LedgerEvent, Ledgers
from ._messages import (
    Attempt,
    AuctionAwarded,
    AuctionResult,
    Bid,
    CallForProposals,
    Contract,
    ContractResult,
    MarketOutcome,
    MarketTask,
)
from ._strategies import Award, Strategy, resolve

__all__ = ["AuctioneerSettings", "BidBox", "MarketSession"]


@dataclass(frozen=True)
class AuctioneerSettings:
    """What a job needs of its auctioneer: the market, its bidders, strategy and limits."""

    market: str
    bidders: tuple[str, ...]
    strategy_name: str
    strategy: Strategy
    bid_timeout: float
    contract_timeout: float
    max_attempts: int
    topics: Mapping[str, str]

    def strategy_for(self, task: MarketTask) -> tuple[str, Strategy]:
        """The strategy for ``task`` (its own, else the auctioneer's)."""
        return resolve(task.strategy) if task.strategy else (self.strategy_name, self.strategy)


@dataclass
class BidBox:
    """The bids of one auction as they arrive (filled by the broadcast bid handler)."""

    expected: frozenset[str]
    bids: dict[str, Bid] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Awarded:
    task: MarketTask
    award: Award
    attempt: Attempt


class MarketSession:
    """The state of one job: ledgers, attempts and exclusions per task.

    ``boxes`` is the auctioneer's registry of open auctions, which its broadcast bid
    handler fills; the session opens and closes its own auctions there.
    """

    def __init__(
        self,
        settings: AuctioneerSettings,
        boxes: dict[tuple[str, str], BidBox],
        ctx: Context,
        ledgers: Ledgers,
    ) -> None:
        self.au = settings
        self.boxes = boxes
        self.ctx = ctx
        self.ledgers = ledgers
        self.attempts: dict[str, list[Attempt]] = {}
        self.excluded: dict[str, list[str]] = {}
        self.results: dict[str, AuctionResult] = {}

    async def note(self, step: str, **details: Any) -> None:
        await self.ctx.note(step, pattern="market", market=self.au.market, **details)

    async def record(
        self, agent: str, kind: str, task: MarketTask, auction_id: str, price: float
    ) -> None:
        event = LedgerEvent.model_validate(
            {
                "market": self.au.market,
                "seq": self.ledgers.version + 1,
                "agent": agent,
                "kind": kind,
                "auction_id": auction_id,
                "task_id": task.id,
                "effort": task.effort,
                "price": price,
            }
        )
        await self.ctx.publish(self.au.topics["ledger"], event, key=agent)
        self.ledgers.apply(event)

    async def run(self, tasks: list[MarketTask]) -> MarketOutcome:
        await self.note("job-opened", tasks=[t.id for t in tasks], bidders=list(self.au.bidders))
        pending = list(tasks)
        wave = 0
        while pending:
            wave += 1
            awarded = [a for a in [await self.auction(t) for t in pending] if a is not None]
            replies = await asyncio.gather(*(self.contract(a) for a in awarded))
            pending = []
            for item, reply in zip(awarded, replies, strict=True):
                if await self.settle(item, reply):
                    pending.append(item.task)
            if pending:
                await self.note("re-auction", wave=wave + 1, tasks=[t.id for t in pending])
        outcome = MarketOutcome(
            market=self.au.market,
            results=[self.results[t.id] for t in tasks],
            # Every registered bidder, idle ones too, so the outcome shows the whole market.
            ledgers={
                name: self.ledgers.get(name)
                for name in sorted({*self.au.bidders, *self.ledgers.snapshot()})
            },
        )
        await self.note("job-closed", by_status=outcome.by_status(), waves=wave)
        return outcome

    async def auction(self, task: MarketTask) -> _Awarded | None:
        """Call for proposals, collect bids, award; ``None`` when nobody is awarded."""
        au, run_id = self.au, self.ctx.run_id or ""
        tries = self.attempts.setdefault(task.id, [])
        excluded = self.excluded.setdefault(task.id, [])
        auction_id = f"{task.id}-a{len(tries) + 1}"  # deterministic, so replays call alike
        box = BidBox(frozenset(au.bidders))
        self.boxes[(run_id, auction_id)] = box
        try:
            call = CallForProposals(
                market=au.market,
                auction_id=auction_id,
                task=task,
                attempt=len(tries) + 1,
                excluded=sorted(excluded),
                ledger_version=self.ledgers.version,
            )
            await self.ctx.publish(au.topics["cfp"], call, key=task.id)
            try:
                await asyncio.wait_for(box.done.wait(), au.bid_timeout)
            except TimeoutError:
                pass  # the deadline: award among the bids we have
        finally:
            del self.boxes[(run_id, auction_id)]
        bids = [box.bids[name] for name in sorted(box.bids)]
        silent = sorted(box.expected - box.bids.keys())
        offers = [
            b for b in bids if not b.declined and b.cost is not None and b.bidder not in excluded
        ]
        over = [b.bidder for b in offers if task.max_price is not None and b.cost is not None and b.cost > task.max_price]  # fmt: skip
        offers = [b for b in offers if b.bidder not in over]
        name, strategy = au.strategy_for(task)
        await self.note(
            "bids-collected",
            auction=auction_id,
            task=task.id,
            bids={b.bidder: b.cost for b in offers},
            declined={b.bidder: b.note for b in bids if b.declined},
            over_reserve=over,
            silent=silent,
        )
        award = strategy(task, offers) if offers else None
        if award is not None and award.winner not in {b.bidder for b in offers}:
            raise UsageError(f"strategy {name!r} awarded {award.winner!r}, who made no valid bid")
        attempt = Attempt(auction_id=auction_id, outcome="no_bids", bids=bids, silent=silent)
        tries.append(attempt)
        if award is None:
            reason = _no_bid_reason(bids, silent, over)
            attempt.reason = reason
            # After a failed winner, "nobody else bid" means the task failed.
            status = "failed" if excluded else "no_bids"
            self.results[task.id] = AuctionResult(
                task_id=task.id, status=status, reason=reason, attempts=tries
            )
            await self.note("no-bids", auction=auction_id, task=task.id, reason=reason)
            return None
        attempt.winner, attempt.price, attempt.reason = award.winner, award.price, award.reason
        losers = sorted(b.bidder for b in offers if b.bidder != award.winner)
        notice = AuctionAwarded(
            market=au.market,
            auction_id=auction_id,
            task_id=task.id,
            winner=award.winner,
            price=award.price,
            strategy=name,
            reason=award.reason,
            losers=losers,
        )
        await self.ctx.publish(au.topics["awards"], notice, key=task.id)
        await self.record(award.winner, "awarded", task, auction_id, award.price)
        await self.note(
            "awarded", auction=auction_id, task=task.id, winner=award.winner,
            price=award.price, strategy=name, reason=award.reason, losers=losers,
        )  # fmt: skip
        return _Awarded(task, award, attempt)

    async def contract(self, item: _Awarded) -> ContractResult | str:
        """Send the winner its contract; the result, or why it failed."""
        au = self.au
        contract = Contract(
            market=au.market,
            auction_id=item.attempt.auction_id,
            task=item.task,
            price=item.award.price,
        )
        try:
            result: ContractResult = await self.ctx.request(
                au.topics["bidder"] + item.award.winner,
                contract,
                timeout=au.contract_timeout,
                expect=ContractResult,
            )
            return f"gave up: {result.failed}" if result.failed else result
        except RequestTimeout:
            return f"timed out after {au.contract_timeout:g}s"
        except RemoteError as exc:
            return f"failed: {exc}"

    async def settle(self, item: _Awarded, reply: ContractResult | str) -> bool:
        """Record a contract's outcome; whether the task must be auctioned again."""
        task, award, attempt = item.task, item.award, item.attempt
        tries = self.attempts[task.id]
        if isinstance(reply, ContractResult):
            attempt.outcome = "completed"
            await self.record(award.winner, "completed", task, attempt.auction_id, award.price)
            self.results[task.id] = AuctionResult(
                task_id=task.id, status="completed", winner=award.winner, price=award.price,
                reason=award.reason, result=reply.result, summary=reply.summary, attempts=tries,
            )  # fmt: skip
            await self.note("contract-completed", auction=attempt.auction_id, task=task.id, winner=award.winner)  # fmt: skip
            return False
        attempt.outcome, attempt.detail = "failed", reply
        self.excluded[task.id].append(award.winner)
        await self.record(award.winner, "failed", task, attempt.auction_id, award.price)
        await self.note("contract-failed", auction=attempt.auction_id, task=task.id, winner=award.winner, error=reply)  # fmt: skip
        if len(tries) < self.au.max_attempts:
            return True
        self.results[task.id] = AuctionResult(
            task_id=task.id, status="failed", attempts=tries,
            reason=f"{len(tries)} auctions, every winner failed (last: {award.winner} {reply})",
        )  # fmt: skip
        return False


def _no_bid_reason(bids: list[Bid], silent: list[str], over: list[str]) -> str:
    parts = []
    declined = [f"{b.bidder} ({b.note})" if b.note else b.bidder for b in bids if b.declined]
    if declined:
        parts.append("declined: " + ", ".join(declined))
    if over:
        parts.append("over the reserve price: " + ", ".join(over))
    if silent:
        parts.append("no answer: " + ", ".join(silent))
    return "nobody bid" + (" — " + "; ".join(parts) if parts else "")
