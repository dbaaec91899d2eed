"""Per-agent ledgers, event-sourced: an agent's ledger is the fold of its ledger events.

The auctioneer is the only writer: it publishes a :class:`LedgerEvent` when it awards a
contract (the winner's load and committed effort grow), when the winner delivers
(effort moves to ``spent``, the price to ``earned``) and when the winner fails. Bidders
fold the same events (to the version a call for proposals names) and price their bids
from their own ledger, so load and used budget shape later bids.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agentbus import Journal, Message

__all__ = ["Ledger", "LedgerEvent", "Ledgers", "ledger_topic", "rebuild_ledgers"]


def ledger_topic(market: str) -> str:
    """The topic carrying ``market``'s ledger events."""
    return f"market.{market}.ledger"


class LedgerEvent(Message, type="market.LedgerEvent"):
    """One change to an agent's ledger; ``seq`` numbers the market's ledger events from 1."""

    market: str
    seq: int
    agent: str
    kind: Literal["awarded", "completed", "failed"]
    auction_id: str
    task_id: str
    effort: float
    price: float


class Ledger(BaseModel):
    """One agent's standing: contracts in progress (``active``, ``committed`` effort),
    delivered (``completed``, ``spent`` effort, ``earned``), ``won`` and ``failed``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    """The bidder this ledger belongs to."""
    active: int = 0
    """Contracts awarded and not yet delivered or failed."""
    committed: float = 0.0
    """Effort of the active contracts."""
    spent: float = 0.0
    """Effort of the delivered contracts."""
    earned: float = 0.0
    """Sum of the prices of delivered contracts."""
    won: int = 0
    """Contracts awarded in all."""
    completed: int = 0
    """Contracts delivered."""
    failed: int = 0
    """Contracts that failed or timed out."""

    @property
    def used(self) -> float:
        """Effort taken on so far: in progress plus delivered."""
        return self.committed + self.spent

    def apply(self, event: LedgerEvent) -> Ledger:
        """This ledger after ``event`` (an event for another agent changes nothing)."""
        if event.agent != self.agent:
            return self
        if event.kind == "awarded":
            change: dict[str, float] = {
                "active": self.active + 1,
                "committed": self.committed + event.effort,
                "won": self.won + 1,
            }
        elif event.kind == "completed":
            change = {
                "active": self.active - 1,
                "committed": self.committed - event.effort,
                "spent": self.spent + event.effort,
                "earned": self.earned + event.price,
                "completed": self.completed + 1,
            }
        else:
            change = {
                "active": self.active - 1,
                "committed": self.committed - event.effort,
                "failed": self.failed + 1,
            }
        # Rounded so that effort taken on and given back cancels exactly in the fold.
        return self.model_copy(
            update={k: round(v, 6) if isinstance(v, float) else v for k, v in change.items()}
        )


class Ledgers:
    """Every agent's ledger at one version of a market's ledger events."""

    def __init__(self, market: str) -> None:
        self.market = market
        self.version = 0
        self._ledgers: dict[str, Ledger] = {}

    def apply(self, event: LedgerEvent) -> None:
        """Apply the next event.

        Raises :class:`ValueError` when it is for another market or not the next ``seq``.
        """
        if event.market != self.market or event.seq != self.version + 1:
            raise ValueError(
                f"ledger event {event.market!r} #{event.seq} does not follow market "
                f"{self.market!r} at #{self.version}"
            )
        self._ledgers[event.agent] = self.get(event.agent).apply(event)
        self.version = event.seq

    @classmethod
    def fold(cls, market: str, events: Iterable[LedgerEvent]) -> Ledgers:
        """Fold ``events`` (any order; only this market's) into ledgers."""
        ledgers = cls(market)
        for event in sorted((e for e in events if e.market == market), key=lambda e: e.seq):
            ledgers.apply(event)
        return ledgers

    def get(self, agent: str) -> Ledger:
        """``agent``'s ledger (an empty one for an agent with no events yet)."""
        return self._ledgers.get(agent) or Ledger(agent=agent)

    def snapshot(self) -> dict[str, Ledger]:
        """Every ledger with events, by agent name (sorted)."""
        return {name: self._ledgers[name] for name in sorted(self._ledgers)}


async def rebuild_ledgers(journal: Journal, run_id: str, market: str) -> Ledgers:
    """``market``'s ledgers as they stood at the end of run ``run_id``, from its journal.

    Raises :class:`ValueError` when the recorded events do not fold (a gap).
    """
    topic = ledger_topic(market)
    events = [
        LedgerEvent.model_validate(env.data or {})
        for env in await journal.events(run_id)
        if env.topic == topic and env.type == LedgerEvent.message_type
    ]
    return Ledgers.fold(market, events)
