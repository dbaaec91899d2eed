"""The documented import paths of the patterns: each pattern is a package with a curated
``__all__``, every path resolves, and one name is one object wherever it is imported from."""

from __future__ import annotations

import importlib
import warnings

import pytest

from agentbus import Runtime, patterns
from agentbus.patterns.blackboard import BlackboardController, BoardOutcome, board_topics
from agentbus.patterns.market import Auctioneer, MarketOutcome, MarketTask

#: The public names of each pattern's package: what ``from patterns.<pattern> import X``
#: promises. Changing a list is changing the public API.
PUBLIC = {
    "agentbus.patterns.orchestrator_worker": {
        "AggregateFn", "Aggregator", "FailurePolicy", "Job", "JobFailed", "JobResult",
        "ModelAggregator", "ModelPlanner", "Orchestrator", "PlanFn", "Planner", "Summary",
        "Task", "TaskFailure", "TaskResult", "WorkFn", "WorkOutput", "Worker", "worker",
    },
    "agentbus.patterns.hierarchical": {
        "AggregateFn", "Aggregator", "Child", "Delegation", "Escalation", "Hierarchy", "Job",
        "JobFailed", "JobResult", "ModelAggregator", "ModelRouter", "Node", "RouteFn", "Router",
        "Summary", "Supervisor", "TaskFailure", "TaskResult", "Team", "budget",
    },
    "agentbus.patterns.blackboard": {
        "BlackboardController", "BoardClosed", "BoardEntry", "BoardOutcome", "BoardPoll",
        "BoardSettings", "BoardState", "Chooser", "ContributeRequest", "Contribution", "Draft",
        "Eligibility", "Ending", "Goal", "KnowledgeSource", "RoundRecord", "SequencedView",
        "SolveBoard", "StaleView", "Verdict", "board_topics", "by_priority", "model_chooser",
        "ranked", "rebuild_board",
    },
    "agentbus.patterns.market": {
        "STRATEGIES", "Attempt", "AuctionAwarded", "AuctionResult", "Auctioneer",
        "AuctioneerSettings", "Award", "Bid", "Bidder", "CallForProposals", "Contract",
        "ContractFailed", "ContractResult", "Decline", "Ledger", "LedgerEvent", "Ledgers", "MarketJob",
        "MarketOutcome", "MarketTask", "Quote", "SequencedView", "StaleView", "Strategy",
        "best_score", "ledger_topic", "lowest_cost", "market_topics", "rebuild_ledgers",
        "second_price",
    },
}  # fmt: skip

#: What a user implements or sends to use each pattern: reachable from ``patterns`` itself.
TOP_LEVEL = {
    "agentbus.patterns.orchestrator_worker": [
        "Planner", "Aggregator", "PlanFn", "AggregateFn", "WorkFn", "WorkOutput", "Job",
    ],
    "agentbus.patterns.hierarchical": ["Router", "RouteFn", "Child", "Delegation"],
    "agentbus.patterns.blackboard": ["Chooser", "Goal", "Verdict", "SolveBoard", "KnowledgeSource"],
    "agentbus.patterns.market": ["Strategy", "Award", "Quote", "Decline", "MarketJob", "Bidder"],
}  # fmt: skip


def _sorted_like_ruff(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_each_pattern_is_a_package_with_a_curated_all(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert str(module.__file__).endswith("__init__.py")
    assert set(module.__all__) == PUBLIC[module_name]
    assert module.__all__ == _sorted_like_ruff(module.__all__)
    for name in module.__all__:
        obj = getattr(module, name)
        # Implementation lives in private modules of the package or of patterns.common.
        owner = getattr(obj, "__module__", None)
        if isinstance(obj, type) and owner and owner.startswith("patterns."):
            assert owner.startswith((module_name + "._", "agentbus.patterns.common._")), (
                name,
                owner,
            )


def test_one_name_is_one_object_across_every_import_path() -> None:
    owners: dict[str, object] = {}
    for module_name in [*sorted(PUBLIC), "agentbus.patterns.common"]:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            assert owners.setdefault(name, getattr(module, name)) is getattr(module, name), name
    for name in patterns.__all__:
        obj = getattr(patterns, name)
        if name in owners:
            assert obj is owners[name], name


def test_what_a_user_implements_is_exported_at_the_top() -> None:
    for module_name, names in TOP_LEVEL.items():
        module = importlib.import_module(module_name)
        for name in names:
            assert name in patterns.__all__, name
            assert getattr(patterns, name) is getattr(module, name), name


def test_the_old_flat_modules_are_gone() -> None:
    for old in [
        "agentbus.patterns.ow_messages",
        "agentbus.patterns.bb_board",
        "agentbus.patterns.market_session",
    ]:
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)


def test_ask_model_is_deprecated_for_agents_call_model() -> None:
    from agentbus.agents import call_model

    with pytest.warns(DeprecationWarning, match="agentbus.agents.call_model"):
        from agentbus.patterns.orchestrator_worker import ask_model
    assert ask_model is call_model


async def test_solve_and_auction_still_work_with_a_deprecation_warning() -> None:
    controller = BlackboardController("dep", ["nobody"], goal=lambda board: True)
    auctioneer = Auctioneer("dep", ["nobody"], bid_timeout=0.2)
    async with Runtime("memory://?journal=", block_ms=50) as rt:
        rt.add(controller, auctioneer)
        async with rt.run("deprecated") as run:
            with pytest.warns(DeprecationWarning, match="controller.topic"):
                board = await patterns.solve_board(run, "dep", problem={"x": 1}, timeout=10)
            with pytest.warns(DeprecationWarning, match="auctioneer.topic"):
                market = await patterns.auction(
                    run, "dep", [MarketTask(id="t", skill="any")], timeout=10
                )
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # the one way warns about nothing
                assert controller.topic == board_topics("dep")["control"]
                again = await run.request(
                    controller.topic,
                    patterns.SolveBoard(problem={"x": 1}),
                    expect=BoardOutcome,
                    timeout=10,
                )
    assert isinstance(board, BoardOutcome)
    assert board.ending == "goal"
    assert again.ending == "goal"
    assert isinstance(market, MarketOutcome)
    assert [r.status for r in market.results] == ["no_bids"]
