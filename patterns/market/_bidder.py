"""Bidders: agents that answer calls for proposals and perform the contracts they win.

::

    class Translator(Bidder, name="carol"):
        market = "studio"

        async def quote(self, task: MarketTask, ledger: Ledger, ctx: Context) -> Quote | Decline:
            if task.skill != "translation":
                return Decline("no translation skill")
            return Quote(cost=35 * task.effort * (1 + 0.25 * ledger.active))

        async def perform(self, contract: Contract, ctx: Context) -> dict[str, Any]:
            return {"text": ...}

Every replica of a bidder folds the market's ledger events (broadcast) into its own
view; calls for proposals, awards and contracts are the logical bidder's (shared): one
replica answers each, so a bidder hosted by N processes bids once, as in one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentbus import Agent, Context, UsageError

from ..common import SequencedView
from ._ledger import Ledger, LedgerEvent, Ledgers
from ._messages import (
    AuctionAwarded,
    Bid,
    CallForProposals,
    Contract,
    ContractResult,
    MarketTask,
    market_topics,
)

__all__ = ["Bidder", "ContractFailed", "Decline", "Quote"]


class ContractFailed(Exception):
    """Raised by :meth:`Bidder.perform` to give up a contract, as an expected outcome.

    The auctioneer gets the reason in its :class:`ContractResult` at once (no retries, no
    dead letter, logged at INFO) and re-auctions the task without this bidder.
    """


@dataclass(frozen=True)
class Quote:
    """A bid: what the bidder asks (``cost``) and how well it would do (``score``)."""

    cost: float
    """The price asked; strategies compare it."""
    score: float = 0.0
    """Expected quality, for ``best_score`` (higher is better)."""
    note: str = ""
    """Free text, recorded with the bid."""


@dataclass(frozen=True)
class Decline:
    """No bid, and why."""

    reason: str = ""
    """Why not; listed in the task's ``no_bids`` reason."""


class Bidder(Agent):
    """Base class of market participants.

    Set ``market`` on the class or per instance; override :meth:`quote` and
    :meth:`perform` (and :meth:`notified` to react to awards). ``sync_timeout`` bounds
    how long a call waits for ledger events still in flight before reading the journal.

    Args:
        name: the agent's name, which the auctioneer's ``bidders`` list must name (default:
            the class's ``name=``); contracts arrive on ``market.<market>.bidder.<name>``.
        market: the market to bid in (default: the class attribute ``market``).

    Raises :class:`UsageError` when no market is set.
    """

    market: str = ""
    sync_timeout: float = 2.0

    def __init__(self, *, name: str | None = None, market: str | None = None) -> None:
        super().__init__(name=name)
        if market is not None:
            self.market = market
        if not self.market:
            raise UsageError(f"bidder {self.name!r} needs a market name (market=...)")
        self.topics = market_topics(self.market)
        self.view: SequencedView[LedgerEvent] = SequencedView(
            LedgerEvent, self.topics["ledger"], lambda e: e.seq
        )
        # Answering is the logical bidder's (shared: one replica answers each call, once
        # however many processes host it); folding the ledger is every replica's own
        # (broadcast: each keeps its view, so whichever replica answers prices the bid from
        # the ledger version the call names). Calls and awards start at new entries: a
        # bidder that joins a market must not answer the calls of runs that ended before it.
        topics = self.topics
        self.bind(topics["cfp"], self._on_call, message=CallForProposals, from_start=False)
        self.bind(topics["ledger"], self._on_ledger, message=LedgerEvent, mode="broadcast")
        self.bind(topics["awards"], self._on_award, message=AuctionAwarded, from_start=False)
        self.bind(topics["bidder"] + self.name, self._on_contract, message=Contract)

    # -- what subclasses implement -----------------------------------------------------------
    async def quote(self, task: MarketTask, ledger: Ledger, ctx: Context) -> Quote | Decline | None:
        """This bidder's bid for ``task`` given its ``ledger`` (default: decline)."""
        return None

    async def perform(self, contract: Contract, ctx: Context) -> dict[str, Any]:
        """Do the work of a won contract and return its result (JSON-ready).

        Raising fails the contract: the auctioneer re-auctions the task without this
        bidder. Raise :class:`ContractFailed` when that is an expected outcome (the
        work is beyond this bidder); any other exception is an error: it is retried,
        then dead-lettered.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement perform()")

    async def notified(self, award: AuctionAwarded, won: bool, ctx: Context) -> None:
        """Called once per award in the market (``won`` when this bidder won).

        Once per logical bidder: with several replicas, one of them is called. State
        every replica needs belongs in a fold of the ledger (:meth:`ledger_at`).
        """

    async def ledger_at(self, ctx: Context, version: int) -> Ledgers:
        """The market's ledgers at ``version`` as this bidder has watched them.

        Raises :class:`~patterns.market.StaleView` when the events cannot be gathered.
        """
        events = await self.view.upto(ctx, version, timeout=self.sync_timeout)
        return Ledgers.fold(self.market, events)

    # -- handlers ------------------------------------------------------------------------------
    async def _on_ledger(self, event: LedgerEvent, ctx: Context) -> None:
        if ctx.run_id is not None:
            await self.view.add(ctx.run_id, event)

    async def _on_call(self, call: CallForProposals, ctx: Context) -> None:
        bid = Bid(market=self.market, auction_id=call.auction_id, bidder=self.name, declined=True)
        if self.name in call.excluded:
            bid.note = "excluded: failed this task before"
        else:
            # Failing to price is answered as a decline, so the auction need not wait
            # for its deadline to learn that this bidder is out.
            try:
                ledger = (await self.ledger_at(ctx, call.ledger_version)).get(self.name)
                answer = await self.quote(call.task, ledger, ctx)
                if isinstance(answer, Quote):
                    bid.declined, bid.cost, bid.score, bid.note = (
                        False, answer.cost, answer.score, answer.note,
                    )  # fmt: skip
                elif isinstance(answer, Decline):
                    bid.note = answer.reason
            except Exception as exc:
                ctx.logger.warning("%s could not price %s: %s", self.name, call.auction_id, exc)
                bid.note = f"error: {type(exc).__name__}: {exc}"
        await ctx.publish(self.topics["bids"], bid)

    async def _on_award(self, award: AuctionAwarded, ctx: Context) -> None:
        await self.notified(award, award.winner == self.name, ctx)

    async def _on_contract(self, contract: Contract, ctx: Context) -> ContractResult:
        try:
            result = await self.perform(contract, ctx)
        except ContractFailed as exc:
            ctx.logger.info("%s gave up %s: %s", self.name, contract.auction_id, exc)
            return ContractResult(
                market=self.market,
                auction_id=contract.auction_id,
                bidder=self.name,
                failed=str(exc) or "gave up",
            )
        summary = str(result.get("summary", "")) if isinstance(result, dict) else ""
        return ContractResult(
            market=self.market,
            auction_id=contract.auction_id,
            bidder=self.name,
            result=result,
            summary=summary,
        )
