"""The market's events: calls for proposals, bids, awards, contracts, ledger entries.

Topics of market ``m`` (see :func:`market_topics`): ``market.m.jobs`` (work for the
auctioneer), ``market.m.cfp`` (calls for proposals, broadcast to bidders),
``market.m.bids`` (their answers), ``market.m.awards`` (who won, broadcast),
``market.m.ledger`` (the ledgers' events), ``market.m.bidder.<name>`` (contracts).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentbus import Message

from ._ledger import Ledger, ledger_topic

__all__ = [
    "Attempt",
    "AuctionAwarded",
    "AuctionResult",
    "Bid",
    "CallForProposals",
    "Contract",
    "ContractResult",
    "MarketJob",
    "MarketOutcome",
    "MarketTask",
    "market_topics",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MarketTask(_Model):
    """Work to auction: the ``skill`` it needs and its ``effort`` (in any unit bidders share).

    ``max_price`` is a reserve: bids above it are not accepted. ``strategy`` overrides the
    auctioneer's award strategy for this task (a name from ``STRATEGIES``).
    """

    id: str
    """Unique within a job; results name it as ``AuctionResult.task_id``."""
    skill: str
    """What a bidder needs to do it; bidders decline skills they lack."""
    effort: float = 1.0
    """How much work it is, in any unit the bidders share (ledgers add it up)."""
    description: str = ""
    """What to do, in words."""
    max_price: float | None = None
    """The reserve: bids above it are not accepted (``None``: no limit)."""
    strategy: str | None = None
    """A name from ``STRATEGIES`` that overrides the auctioneer's strategy for this task."""
    data: dict[str, Any] = Field(default_factory=dict)
    """Structured inputs for the winner."""


class MarketJob(Message, type="market.Job"):
    """Ask a market's auctioneer to auction ``tasks`` (in this order) and collect results.

    Send it as a request to the auctioneer's ``topic``; the answer is a
    :class:`MarketOutcome`.
    """

    market: str = ""
    """The market's name; empty means the market of the auctioneer it is sent to."""
    tasks: list[MarketTask]
    """The tasks, auctioned in this order."""


class CallForProposals(Message, type="market.CallForProposals"):
    """Broadcast to every bidder. Bid on ``task`` as your ledger stood at ``ledger_version``.

    ``excluded`` bidders failed this task before and are not considered.
    """

    market: str
    auction_id: str
    task: MarketTask
    attempt: int
    excluded: list[str] = Field(default_factory=list)
    ledger_version: int


class Bid(Message, type="market.Bid"):
    """A bidder's answer to a call: a ``cost`` (and quality ``score``) or a decline."""

    market: str
    auction_id: str
    bidder: str
    declined: bool = False
    cost: float | None = None
    score: float = 0.0
    note: str = ""


class AuctionAwarded(Message, type="market.Awarded"):
    """Broadcast when an auction is decided: the winner, the price, the losers and why."""

    market: str
    auction_id: str
    task_id: str
    winner: str
    price: float
    strategy: str
    reason: str
    losers: list[str] = Field(default_factory=list)


class Contract(Message, type="market.Contract"):
    """The request to the winner: perform ``task`` for ``price``."""

    market: str
    auction_id: str
    task: MarketTask
    price: float


class ContractResult(Message, type="market.ContractResult"):
    """The winner's reply: what it produced, or why it gave the contract up."""

    market: str
    auction_id: str
    bidder: str
    result: dict[str, Any] = Field(default_factory=dict)
    summary: str = ""
    failed: str = ""
    """Why the winner gave up the contract (``ContractFailed``); empty when it delivered."""


class Attempt(_Model):
    """One auction of a task and what came of it."""

    auction_id: str
    """The auction's id (also in the journal's steps)."""
    outcome: Literal["completed", "failed", "no_bids"]
    """``completed``, ``failed`` (the winner failed or timed out) or ``no_bids``."""
    winner: str | None = None
    """The bidder awarded the task, if any."""
    price: float | None = None
    """What the winner is paid."""
    reason: str = ""
    """Why the strategy chose the winner, or why nobody was chosen."""
    bids: list[Bid] = Field(default_factory=list)
    """Every bid and decline received."""
    silent: list[str] = Field(default_factory=list)
    """Registered bidders that did not answer before ``bid_timeout``."""
    detail: str = ""
    """The winner's error when the contract failed."""


class AuctionResult(_Model):
    """Where a task ended: ``completed`` (with the result), ``no_bids`` or ``failed``."""

    task_id: str
    """The ``id`` of the :class:`MarketTask` this result is for."""
    status: Literal["completed", "no_bids", "failed"]
    """``completed``, ``no_bids`` (nobody could or would) or ``failed`` (every winner failed)."""
    winner: str | None = None
    """The bidder that completed the task."""
    price: float | None = None
    """What it was paid."""
    reason: str = ""
    """Why it won, or why the task did not complete."""
    result: dict[str, Any] = Field(default_factory=dict)
    """What the winner's ``perform`` returned."""
    summary: str = ""
    """The winner's one-line summary of its result."""
    attempts: list[Attempt] = Field(default_factory=list)
    """Every auction of the task, in order."""


class MarketOutcome(Message, type="market.Outcome"):
    """The auctioneer's reply: one result per task (in job order) and the ledgers after."""

    market: str
    """The market's name."""
    results: list[AuctionResult]
    """One :class:`AuctionResult` per task, in the job's order."""
    ledgers: dict[str, Ledger] = Field(default_factory=dict)
    """Every registered bidder's :class:`Ledger` after the job, by bidder name."""

    def by_status(self) -> dict[str, list[str]]:
        """Task ids grouped by status."""
        out: dict[str, list[str]] = {}
        for r in self.results:
            out.setdefault(r.status, []).append(r.task_id)
        return out


def market_topics(market: str) -> dict[str, str]:
    """The topics of ``market`` (``bidder`` is a prefix: append the bidder's name)."""
    base = f"market.{market}"
    return {
        "jobs": f"{base}.jobs",
        "cfp": f"{base}.cfp",
        "bids": f"{base}.bids",
        "awards": f"{base}.awards",
        "ledger": ledger_topic(market),
        "bidder": f"{base}.bidder.",
    }
