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

The names below are what an application of each pattern uses; every pattern's module has
the rest (its events, topics and helpers). No two patterns use one name for different types:
an orchestrator's unit of work is :class:`Task`, a market's is :class:`MarketTask`.
"""

from __future__ import annotations

from . import blackboard, hierarchical, market, orchestrator_worker
from .blackboard import (
    BlackboardController,
    BoardOutcome,
    BoardState,
    Draft,
    KnowledgeSource,
    RoundRecord,
    Verdict,
    rebuild_board,
)
from .blackboard import solve as solve_board
from .hierarchical import (
    Delegation,
    Escalation,
    Hierarchy,
    ModelRouter,
    Node,
    Supervisor,
    Team,
)
from .market import (
    Attempt,
    Auctioneer,
    AuctionResult,
    Bidder,
    Contract,
    Decline,
    Ledger,
    MarketOutcome,
    MarketTask,
    Quote,
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
    Summary,
    Task,
    TaskFailure,
    TaskResult,
    Worker,
    WorkOutput,
    worker,
)

__all__ = [
    "Attempt",
    "AuctionResult",
    "Auctioneer",
    "Bidder",
    "BlackboardController",
    "BoardOutcome",
    "BoardState",
    "Contract",
    "Decline",
    "Delegation",
    "Draft",
    "Escalation",
    "FailurePolicy",
    "Hierarchy",
    "Job",
    "JobFailed",
    "JobResult",
    "KnowledgeSource",
    "Ledger",
    "MarketOutcome",
    "MarketTask",
    "ModelAggregator",
    "ModelPlanner",
    "ModelRouter",
    "Node",
    "Orchestrator",
    "Quote",
    "RoundRecord",
    "Summary",
    "Supervisor",
    "Task",
    "TaskFailure",
    "TaskResult",
    "Team",
    "Verdict",
    "WorkOutput",
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
