"""Award strategies: pure functions from a task and its valid bids to an award.

A strategy gets only real bids (not declines, within the task's reserve price), sorted
by bidder name, and returns an :class:`Award` or ``None`` (award nothing). Every tie is
broken by bidder name, so the same bids always give the same award.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agentbus import UsageError

from ._messages import Bid, MarketTask

__all__ = [
    "STRATEGIES",
    "Award",
    "Strategy",
    "best_score",
    "lowest_cost",
    "resolve",
    "second_price",
]


@dataclass(frozen=True)
class Award:
    """Who wins, what they are paid, and why."""

    winner: str
    price: float
    reason: str


Strategy = Callable[[MarketTask, Sequence[Bid]], Award | None]


def _cost(bid: Bid) -> float:
    return bid.cost if bid.cost is not None else float("inf")


def _runner_up(rest: Sequence[Bid]) -> str:
    return f"; runner-up {rest[0].bidder} at {_cost(rest[0]):g}" if rest else "; the only bid"


def lowest_cost(task: MarketTask, bids: Sequence[Bid]) -> Award | None:
    """The cheapest bid wins and is paid its own cost."""
    if not bids:
        return None
    first, *rest = sorted(bids, key=lambda b: (_cost(b), b.bidder))
    return Award(first.bidder, _cost(first), f"lowest cost {_cost(first):g}{_runner_up(rest)}")


def best_score(task: MarketTask, bids: Sequence[Bid]) -> Award | None:
    """The highest quality score wins (ties: cheaper, then name) and is paid its cost."""
    if not bids:
        return None
    first, *rest = sorted(bids, key=lambda b: (-b.score, _cost(b), b.bidder))
    detail = f"; runner-up {rest[0].bidder} scored {rest[0].score:g}" if rest else "; the only bid"
    return Award(
        first.bidder, _cost(first), f"best score {first.score:g} at {_cost(first):g}{detail}"
    )


def second_price(task: MarketTask, bids: Sequence[Bid]) -> Award | None:
    """Vickrey: the cheapest bid wins but is paid the second-lowest cost.

    Bidding one's true cost is then the best strategy. With a single bid the winner is
    paid its own cost (capped by the task's reserve price when set).
    """
    if not bids:
        return None
    first, *rest = sorted(bids, key=lambda b: (_cost(b), b.bidder))
    if rest:
        price = _cost(rest[0])
        if task.max_price is not None:
            price = min(price, task.max_price)
        reason = (
            f"lowest cost {_cost(first):g}, paid the second-lowest {price:g} ({rest[0].bidder})"
        )
    else:
        price = _cost(first)
        reason = f"the only bid, {price:g}, paid as bid"
    return Award(first.bidder, price, reason)


STRATEGIES: dict[str, Strategy] = {
    "lowest_cost": lowest_cost,
    "best_score": best_score,
    "second_price": second_price,
}


def resolve(strategy: str | Strategy) -> tuple[str, Strategy]:
    """A strategy and its name, from a name in :data:`STRATEGIES` or a function.

    Raises :class:`UsageError` for an unknown name.
    """
    if callable(strategy):
        return getattr(strategy, "__name__", "custom"), strategy
    try:
        return strategy, STRATEGIES[strategy]
    except KeyError:
        raise UsageError(
            f"unknown award strategy {strategy!r}; choose one of {sorted(STRATEGIES)!r} "
            "or pass a function"
        ) from None
