"""Market-based coordination: contract-net auctions with event-sourced ledgers.

::

    auctioneer = Auctioneer("studio", bidders=["alice", "bob"], strategy="lowest_cost")
    app = App("task-auction", [auctioneer, Alice, Bob])

    @app.main
    async def main(run: Run) -> MarketOutcome:
        job = MarketJob(tasks=[MarketTask(id="t1", skill="design", effort=2)])
        return await run.request(auctioneer.topic, job, expect=MarketOutcome, timeout=300)

For each task the auctioneer broadcasts a :class:`CallForProposals`, collects a
:class:`Bid` (or decline) from every registered bidder until all answered or
``bid_timeout`` passed, and awards by a strategy (``lowest_cost``, ``best_score``,
``second_price`` or your function; ties by bidder name). It announces the award
(:class:`AuctionAwarded`, winner and losers), records it in the winner's ledger, and
once every task of the wave is awarded sends each winner its :class:`Contract` and
collects the results. A winner that fails or times out is recorded as failed and the
task is auctioned again without it (up to ``max_attempts`` auctions per task). A task
nobody bids on ends as ``no_bids``. Every step is noted (``pattern="market"``).
"""

from __future__ import annotations

from ..common import SequencedView, StaleView
from ._auctioneer import Auctioneer
from ._auctioneer import auction as auction  # deprecated: kept importable, not listed
from ._bidder import Bidder, ContractFailed, Decline, Quote
from ._ledger import Ledger, LedgerEvent, Ledgers, ledger_topic, rebuild_ledgers
from ._messages import (
    Attempt,
    AuctionAwarded,
    AuctionResult,
    Bid,
    CallForProposals,
    Contract,
    ContractResult,
    MarketJob,
    MarketOutcome,
    MarketTask,
    market_topics,
)
from ._session import AuctioneerSettings
from ._strategies import STRATEGIES, Award, Strategy, best_score, lowest_cost, second_price

__all__ = [
    "STRATEGIES",
    "Attempt",
    "AuctionAwarded",
    "AuctionResult",
    "Auctioneer",
    "AuctioneerSettings",
    "Award",
    "Bid",
    "Bidder",
    "CallForProposals",
    "Contract",
    "ContractFailed",
    "ContractResult",
    "Decline",
    "Ledger",
    "LedgerEvent",
    "Ledgers",
    "MarketJob",
    "MarketOutcome",
    "MarketTask",
    "Quote",
    "SequencedView",
    "StaleView",
    "Strategy",
    "best_score",
    "ledger_topic",
    "lowest_cost",
    "market_topics",
    "rebuild_ledgers",
    "second_price",
]


def __getattr__(name: str) -> object:
    # 0.1.0 called MarketTask ``Task``, the name orchestrator-worker's tasks also have;
    # code written against it keeps importing for one release, with a warning.
    if name == "Task":
        import warnings

        warnings.warn(
            "agentbus.patterns.market.Task is deprecated: use agentbus.patterns.market.MarketTask "
            "(patterns.orchestrator_worker.Task is a different type)",
            DeprecationWarning,
            stacklevel=2,
        )
        return MarketTask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
