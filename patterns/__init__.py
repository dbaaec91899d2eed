"""Coordinators for multi-agent systems, built on the public agentbus API.

Five patterns, each a package with its messages, agents and helpers:

* :mod:`patterns.orchestrator_worker` — plan a job into tasks, workers compete for them,
  results are collected by correlation and aggregated.
* :mod:`patterns.hierarchical` — a tree of supervisors delegating to teams; failures
  escalate to the parent.
* :mod:`patterns.blackboard` — an event-sourced shared board; a controller picks among
  knowledge sources until the goal, quiescence or a round limit.
* :mod:`patterns.market` — contract-net auctions with pluggable award strategies and
  event-sourced ledgers.
* :mod:`patterns.saga` — a distributed transaction as steps with compensations, undone
  newest first when a step fails.

Every pattern is started the same way: a request of its job message to its coordinator's
``topic``, answered with its result type::

    await run.request(orchestrator.topic, Job(id="q1", goal="..."), expect=JobResult)
    await run.request(hierarchy.topic, Job(id="f1", goal="..."), expect=JobResult)
    await run.request(controller.topic, SolveBoard(problem={...}), expect=BoardOutcome)
    await run.request(auctioneer.topic, MarketJob(tasks=[...]), expect=MarketOutcome)
    await run.request(saga.topic, SagaJob(saga_id="t-1", data={...}), expect=SagaOutcome)

The names below are what an application of each pattern uses, including the protocols
and function types a user implements (:class:`Planner`, :class:`Aggregator`,
:class:`Router`, :data:`Chooser`, :data:`Strategy`...); every pattern's package has the
rest (its events, topics and helpers). No two patterns use one name for different types:
an orchestrator's unit of work is :class:`Task`, a market's is :class:`MarketTask`.
"""

from __future__ import annotations

from . import blackboard, hierarchical, market, orchestrator_worker
from .blackboard import (
    BlackboardController,
    BoardOutcome,
    BoardState,
    Chooser,
    Draft,
    Goal,
    KnowledgeSource,
    RoundRecord,
    SolveBoard,
    Verdict,
    by_priority,
    model_chooser,
    rebuild_board,
)
from .blackboard import solve as solve_board  # noqa: F401  # deprecated: importable, not listed
from .hierarchical import (
    Child,
    Delegation,
    Escalation,
    Hierarchy,
    ModelRouter,
    Node,
    RouteFn,
    Router,
    Supervisor,
    Team,
)
from .market import (
    Attempt,
    Auctioneer,
    AuctionResult,
    Award,
    Bidder,
    Contract,
    ContractFailed,
    Decline,
    Ledger,
    MarketJob,
    MarketOutcome,
    MarketTask,
    Quote,
    Strategy,
    best_score,
    lowest_cost,
    rebuild_ledgers,
    second_price,
)
from .market import auction as auction  # deprecated: kept importable, not listed
from .orchestrator_worker import (
    AggregateFn,
    Aggregator,
    FailurePolicy,
    Job,
    JobFailed,
    JobResult,
    ModelAggregator,
    ModelPlanner,
    Orchestrator,
    PlanFn,
    Planner,
    Summary,
    Task,
    TaskFailure,
    TaskResult,
    Worker,
    WorkFn,
    WorkOutput,
    worker,
)
from .saga import Saga, SagaJob, SagaOutcome, SagaParticipant

__all__ = [
    "AggregateFn",
    "Aggregator",
    "Attempt",
    "AuctionResult",
    "Auctioneer",
    "Award",
    "Bidder",
    "BlackboardController",
    "BoardOutcome",
    "BoardState",
    "Child",
    "Chooser",
    "Contract",
    "ContractFailed",
    "Decline",
    "Delegation",
    "Draft",
    "Escalation",
    "FailurePolicy",
    "Goal",
    "Hierarchy",
    "Job",
    "JobFailed",
    "JobResult",
    "KnowledgeSource",
    "Ledger",
    "MarketJob",
    "MarketOutcome",
    "MarketTask",
    "ModelAggregator",
    "ModelPlanner",
    "ModelRouter",
    "Node",
    "Orchestrator",
    "PlanFn",
    "Planner",
    "Quote",
    "RoundRecord",
    "RouteFn",
    "Router",
    "Saga",
    "SagaJob",
    "SagaOutcome",
    "SagaParticipant",
    "SolveBoard",
    "Strategy",
    "Summary",
    "Supervisor",
    "Task",
    "TaskFailure",
    "TaskResult",
    "Team",
    "Verdict",
    "WorkFn",
    "WorkOutput",
    "Worker",
    "best_score",
    "blackboard",
    "by_priority",
    "hierarchical",
    "lowest_cost",
    "market",
    "model_chooser",
    "orchestrator_worker",
    "rebuild_board",
    "rebuild_ledgers",
    "second_price",
    "worker",
]
