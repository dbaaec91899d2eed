"""Market-based coordination: contract-net auctions with event-sourced ledgers.

::

    auctioneer = Auctioneer("studio", bidders=["alice", "bob"], strategy="lowest_cost")
    app = App("task-auction", [auctioneer, Alice, Bob])

    @app.main
    async def main(run: Run) -> MarketOutcome:
        return await auction(run, "studio", [MarketTask(id="t1", skill="design", effort=2)])

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

from collections.abc import Iterable, Sequence

from agentbus import Agent, Context, HandlerSpec, Message, Reject, Run, UsageError

from .market_bidder import Bidder, Decline, Quote
from .market_ledger import Ledger, LedgerEvent, Ledgers, ledger_topic, rebuild_ledgers
from .market_messages import (
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
from .market_session import BidBox, MarketSession
from .market_strategies import (
    STRATEGIES,
    Award,
    Strategy,
    best_score,
    lowest_cost,
    resolve,
    second_price,
)

__all__ = [
    "STRATEGIES",
    "Attempt",
    "AuctionAwarded",
    "AuctionResult",
    "Auctioneer",
    "Award",
    "Bid",
    "Bidder",
    "CallForProposals",
    "Contract",
    "ContractResult",
    "Decline",
    "Ledger",
    "LedgerEvent",
    "Ledgers",
    "MarketJob",
    "MarketOutcome",
    "MarketTask",
    "Quote",
    "Strategy",
    "auction",
    "best_score",
    "ledger_topic",
    "lowest_cost",
    "market_topics",
    "rebuild_ledgers",
    "second_price",
]


class Auctioneer(Agent):
    """Runs a market's auctions: calls, bids, awards, contracts, re-auctions, ledgers.

    ``bidders`` names every registered bidder (an auction closes early once all have
    answered). ``strategy`` is a name from :data:`STRATEGIES` or a function; a task's
    own ``strategy`` overrides it. Raises :class:`UsageError` for no bidders, an unknown
    strategy or bad limits.
    """

    def __init__(
        self,
        market: str,
        bidders: Iterable[str],
        *,
        strategy: str | Strategy = "lowest_cost",
        bid_timeout: float = 5.0,
        contract_timeout: float = 30.0,
        max_attempts: int = 3,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name or f"auctioneer-{market}")
        self.market = market
        self.bidders = tuple(sorted(set(bidders)))
        if not self.bidders:
            raise UsageError(f"market {market!r} needs at least one registered bidder")
        if max_attempts < 1 or bid_timeout <= 0 or contract_timeout <= 0:
            raise UsageError(
                "max_attempts must be at least 1 and the timeouts positive, got "
                f"{max_attempts!r}, {bid_timeout!r}, {contract_timeout!r}"
            )
        self.strategy_name, self.strategy = resolve(strategy)
        self.bid_timeout = bid_timeout
        self.contract_timeout = contract_timeout
        self.max_attempts = max_attempts
        self.topics = market_topics(market)
        self.boxes: dict[tuple[str, str], BidBox] = {}
        self._running: set[str] = set()

    def handlers(self) -> list[tuple[HandlerSpec, tuple[type[Message], ...]]]:
        """Jobs (shared) and bids (broadcast: every replica sees every bid and keeps
        those of the auctions it is running).

        A job is delivered once (``max_attempts=1``): contracts of a job that failed
        half-way may have been performed already, so it is dead-lettered, not re-run.
        """
        specs = [
            HandlerSpec(self.topics["jobs"], "_on_job", "shared", (MarketJob,), None, False, 1, None),
            HandlerSpec(self.topics["bids"], "_on_bid", "broadcast", (Bid,), None, False, None, None),
        ]  # fmt: skip
        return [*super().handlers(), *((s, s.message_types or ()) for s in specs)]

    def strategy_for(self, task: MarketTask) -> tuple[str, Strategy]:
        """The strategy for ``task`` (its own, else the auctioneer's)."""
        return resolve(task.strategy) if task.strategy else (self.strategy_name, self.strategy)

    async def _on_bid(self, bid: Bid, ctx: Context) -> None:
        box = self.boxes.get((ctx.run_id or "", bid.auction_id))
        if box is None or bid.bidder not in box.expected or bid.bidder in box.bids:
            return  # another replica's auction, a stranger, or a redelivered duplicate
        box.bids[bid.bidder] = bid
        if box.expected <= box.bids.keys():
            box.done.set()

    async def _on_job(self, job: MarketJob, ctx: Context) -> MarketOutcome:
        if job.market != self.market:
            raise Reject(f"auctioneer of market {self.market!r} got a job for {job.market!r}")
        ids = [t.id for t in job.tasks]
        if len(set(ids)) != len(ids):
            raise Reject(f"task ids must be unique within a job, got {ids!r}")
        for task in job.tasks:
            self.strategy_for(task)  # an unknown strategy fails the job before any auction
        run_id = ctx.run_id or ""
        if run_id in self._running:
            # Two jobs of one market in one run would number ledger events twice.
            raise Reject(f"market {self.market!r} is already running a job in run {run_id!r}")
        self._running.add(run_id)
        try:
            # Ledgers are the fold of the run's ledger events: a later job in the same run
            # continues from them.
            ledgers = await rebuild_ledgers(ctx.runtime.journal, run_id, self.market)
            return await MarketSession(self, ctx, ledgers).run(job.tasks)
        finally:
            self._running.discard(run_id)


async def auction(
    run: Run, market: str, tasks: Sequence[MarketTask], *, timeout: float = 300.0
) -> MarketOutcome:
    """Ask the auctioneer of ``market`` to auction ``tasks`` within ``run``.

    Raises :class:`~agentbus.RequestTimeout` after ``timeout`` seconds and
    :class:`~agentbus.RemoteError` when the auctioneer failed.
    """
    job = MarketJob(market=market, tasks=list(tasks))
    outcome: MarketOutcome = await run.request(
        market_topics(market)["jobs"], job, timeout=timeout, expect=MarketOutcome
    )
    return outcome


def __getattr__(name: str) -> object:
    # 0.1.0 called MarketTask ``Task``, the name orchestrator-worker's tasks also have;
    # code written against it keeps importing for one release, with a warning.
    if name == "Task":
        import warnings

        warnings.warn(
            "patterns.market.Task is deprecated: use patterns.market.MarketTask "
            "(patterns.orchestrator_worker.Task is a different type)",
            DeprecationWarning,
            stacklevel=2,
        )
        return MarketTask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
