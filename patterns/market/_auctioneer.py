"""The auctioneer: calls, bids, awards, contracts, re-auctions and ledgers of a market."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

from agentbus import Agent, Context, Reject, Run, UsageError

from ._ledger import rebuild_ledgers
from ._messages import Bid, MarketJob, MarketOutcome, MarketTask, market_topics
from ._session import AuctioneerSettings, BidBox, MarketSession
from ._strategies import Strategy, resolve

__all__ = ["Auctioneer", "auction"]


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
        # A job is delivered once (max_attempts=1): contracts of a job that failed half-way
        # may have been performed already, so it is dead-lettered, not re-run. Bids are
        # broadcast: every replica sees every bid and keeps those of the auctions it runs.
        self.bind(self.topics["jobs"], self._on_job, message=MarketJob, max_attempts=1)
        self.bind(self.topics["bids"], self._on_bid, message=Bid, mode="broadcast")

    @property
    def topic(self) -> str:
        """Where the auctioneer takes :class:`MarketJob` requests (the market's job topic)."""
        return self.topics["jobs"]

    def settings(self) -> AuctioneerSettings:
        """This auctioneer's configuration, frozen, as a job uses it."""
        return AuctioneerSettings(
            market=self.market,
            bidders=self.bidders,
            strategy_name=self.strategy_name,
            strategy=self.strategy,
            bid_timeout=self.bid_timeout,
            contract_timeout=self.contract_timeout,
            max_attempts=self.max_attempts,
            topics=dict(self.topics),
        )

    def strategy_for(self, task: MarketTask) -> tuple[str, Strategy]:
        """The strategy for ``task`` (its own, else the auctioneer's)."""
        return self.settings().strategy_for(task)

    async def _on_bid(self, bid: Bid, ctx: Context) -> None:
        box = self.boxes.get((ctx.run_id or "", bid.auction_id))
        if box is None or bid.bidder not in box.expected or bid.bidder in box.bids:
            return  # another replica's auction, a stranger, or a redelivered duplicate
        box.bids[bid.bidder] = bid
        if box.expected <= box.bids.keys():
            box.done.set()

    async def _on_job(self, job: MarketJob, ctx: Context) -> MarketOutcome:
        if job.market not in ("", self.market):
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
            return await MarketSession(self.settings(), self.boxes, ctx, ledgers).run(job.tasks)
        finally:
            self._running.discard(run_id)


async def auction(
    run: Run, market: str, tasks: Sequence[MarketTask], *, timeout: float = 300.0
) -> MarketOutcome:
    """Deprecated: ``await run.request(auctioneer.topic, MarketJob(tasks=...), expect=MarketOutcome)``.

    Every pattern is started the same way, with a request of its job message to its
    coordinator's ``topic``; this helper does that for ``market`` and warns. Raises :class:`~agentbus.RequestTimeout` after ``timeout`` seconds and
    :class:`~agentbus.RemoteError` when the auctioneer failed.
    """
    warnings.warn(
        "agentbus.patterns.market.auction() is deprecated: use "
        "run.request(auctioneer.topic, MarketJob(tasks=...), expect=MarketOutcome)",
        DeprecationWarning,
        stacklevel=2,
    )
    job = MarketJob(market=market, tasks=list(tasks))
    outcome: MarketOutcome = await run.request(
        market_topics(market)["jobs"], job, timeout=timeout, expect=MarketOutcome
    )
    return outcome
