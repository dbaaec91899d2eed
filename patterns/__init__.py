"""Coordinators for multi-agent systems, built on the public agentbus API.

Four patterns, each a module with its messages, agents and helpers:

* :mod:`patterns.orchestrator_worker` — plan a job into tasks, workers compete for them,
  results are collected by correlation and aggregated.
* :mod:`patterns.hierarchical` — a tree of supervisors delegating to teams; failures
  escalate to the parent.
* :mod:`patterns.blackboard` — an event-sourced shared board; a controller picks among
  knowledge sources until the goal, quiescence or a round limit.
* :mod:`patterns.market` — contract-net auctions with pluggable award strategies and
  event-sourced ledgers.

The names below are the entry points; message types that share a name across patterns
(``Task``) are reached through their module, e.g. ``patterns.market.Task``.
"""

from __future__ import annotations

from . import blackboard, hierarchical, market, orchestrator_worker
from .blackboard import (
    BlackboardController,
    BoardOutcome,
    BoardState,
    KnowledgeSource,
    rebuild_board,
)
from .blackboard import solve as solve_board
from .hierarchical import Hierarchy, ModelRouter, Node, Supervisor, Team
from .market import (
    Auctioneer,
    AuctionResult,
    Bidder,
    Ledger,
    MarketOutcome,
    auction,
    best_score,
    lowest_cost,
    rebuild_ledgers,
    second_price,
)
from .orchestrator_worker import (
    FailurePolicy,
    Job,
    JobFailed,
    JobResult,
    ModelAggregator,
    ModelPlanner,
    Orchestrator,
    Worker,
    worker,
)

__all__ = [
    "AuctionResult",
    "Auctioneer",
    "Bidder",
    "BlackboardController",
    "BoardOutcome",
    "BoardState",
    "FailurePolicy",
    "Hierarchy",
    "Job",
    "JobFailed",
    "JobResult",
    "KnowledgeSource",
    "Ledger",
    "MarketOutcome",
    "ModelAggregator",
    "ModelPlanner",
    "ModelRouter",
    "Node",
    "Orchestrator",
    "Supervisor",
    "Team",
    "Worker",
    "auction",
    "best_score",
    "blackboard",
    "hierarchical",
    "lowest_cost",
    "market",
    "orchestrator_worker",
    "rebuild_board",
    "rebuild_ledgers",
    "second_price",
    "solve_board",
    "worker",
]
