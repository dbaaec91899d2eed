"""Coordinators with every participant hosted twice (two runtimes, one system).

A logical agent answers once however many processes host it: each knowledge source
answers each poll once, each bidder each call once, and ``notified`` runs once per award
per bidder; every replica still folds every board entry and ledger event. The run is
the same run a single process makes, and the trace lists each replica's deliveries.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from agentbus import Agent, Context, MemoryTransport, Runtime
from agentbus.inspect import build_trace, render_tree
from agentbus.patterns.blackboard import (
    BlackboardController,
    BoardOutcome,
    BoardState,
    Draft,
    KnowledgeSource,
    SolveBoard,
    Verdict,
    board_topics,
)
from agentbus.patterns.market import (
    AuctionAwarded,
    Auctioneer,
    Bidder,
    Decline,
    Ledger,
    MarketJob,
    MarketOutcome,
    MarketTask,
    Quote,
    market_topics,
)

MakeRuntime = Callable[..., Runtime]
BOARD, MARKET = "rep", "rep"


class Ticker(KnowledgeSource, name="ticker"):
    """Adds ticks until the problem's goal count is reached."""

    board = BOARD
    priority = 1

    async def can_contribute(self, board: BoardState, ctx: Context) -> Verdict:
        problem = board.latest("problem")
        return len(board.items("tick")) < (problem.data["goal"] if problem else 0), "ticks"

    async def contribute(self, board: BoardState, ctx: Context) -> Draft:
        return Draft(kind="tick", data={"n": len(board.items("tick")) + 1})


class Closer(KnowledgeSource, name="closer"):
    board = BOARD
    priority = 5

    async def can_contribute(self, board: BoardState, ctx: Context) -> Verdict:
        return len(board.items("tick")) >= 3 and not board.has("done")

    async def contribute(self, board: BoardState, ctx: Context) -> Draft:
        return Draft(kind="done", data={"ticks": len(board.items("tick"))})


def done(board: BoardState) -> bool:
    return board.has("done")


class Worker(Bidder):
    """Bids ``rate`` x effort, +50% per open contract (from its ledger fold)."""

    market = MARKET

    def __init__(self, name: str, skills: set[str], rate: float) -> None:
        super().__init__(name=name)
        self.skills, self.rate = skills, rate
        self.awards: list[tuple[str, bool]] = []

    async def quote(self, task: MarketTask, ledger: Ledger, ctx: Context) -> Quote | Decline:
        if task.skill not in self.skills:
            return Decline(f"no {task.skill}")
        return Quote(cost=self.rate * task.effort * (1 + 0.5 * ledger.active))

    async def perform(self, contract: Any, ctx: Context) -> dict[str, Any]:
        return {"by": self.name, "task": contract.task.id}

    async def notified(self, award: AuctionAwarded, won: bool, ctx: Context) -> None:
        self.awards.append((award.task_id, won))


def team() -> list[Worker]:
    return [
        Worker("ann", {"code"}, rate=10),
        Worker("ben", {"code"}, rate=8),
        Worker("cat", {"code", "design"}, rate=14),
    ]


@pytest.fixture
async def make_runtime(backend: str, url_for: str) -> AsyncIterator[MakeRuntime]:
    """Runtimes that form one system: one shared memory transport, or one Redis prefix."""
    shared = MemoryTransport() if backend == "memory" else None
    made: list[Runtime] = []

    def make(*agents: Agent) -> Runtime:
        options: dict[str, Any] = {"retry_backoff": (0.01, 0.02), "grace_period": 0.3}
        rt = Runtime(transport=shared, **options) if shared else Runtime(url_for, **options)
        rt.add(*agents)  # before start: every group exists before the run publishes
        made.append(rt)
        return rt

    yield make
    for rt in reversed(made):
        await rt.aclose()
    if shared is not None:
        await shared.aclose()


def _published(records: Sequence[Any]) -> list[dict[str, Any]]:
    return [r.record["event"] for r in records if r.kind == "published"]


def _content(events: list[dict[str, Any]]) -> Counter[str]:
    """Events without ids and times (reply inboxes are named per runtime)."""
    return Counter(
        json.dumps([e["type"], e["source"], e.get("data")], sort_keys=True)
        for e in events
        if not str(e.get("topic", "")).startswith("_inbox.")
    )


def _board(**options: Any) -> BlackboardController:
    return BlackboardController(BOARD, ["ticker", "closer"], done, poll_timeout=5, **options)


async def _solve(a: Runtime, b: Runtime | None) -> tuple[BoardOutcome, str, Runtime]:
    for rt in (a, b):
        if rt is not None:
            await rt.start()
    async with a.run("board") as run:
        outcome = await run.request(
            board_topics(BOARD)["control"],
            SolveBoard(problem={"goal": 3}),
            expect=BoardOutcome,
            timeout=30,
        )
    for rt in (a, b):
        if rt is not None:
            await rt.idle()
    return outcome, run.run_id, a


async def test_knowledge_sources_answer_each_poll_once_however_many_replicas(
    make_runtime: MakeRuntime,
) -> None:
    single, single_run, rt1 = await _solve(make_runtime(_board(), Ticker(), Closer()), None)
    alone = _published(await rt1.journal.records(single_run))
    await rt1.aclose()  # else its agents would be replicas too
    replicated, run_id, rt = await _solve(
        make_runtime(_board(), Ticker(), Closer()), make_runtime(Ticker(), Closer())
    )
    records = await rt.journal.records(run_id)
    events = _published(records)
    answers = Counter(
        (e["data"]["poll_id"], e["data"]["source"])
        for e in events
        if e["type"] == "blackboard.Eligibility"
    )
    assert len(answers) == 2 * len(single.history)  # both sources polled every round
    assert set(answers.values()) == {1}, answers  # one answer per source and poll
    assert replicated.history == single.history
    assert replicated.entries == single.entries
    assert _content(events) == _content(alone)

    # Every replica folds every entry, and the trace lists each replica's delivery.
    trace = build_trace(await rt.journal.run(run_id), records)
    entry = next(e for e in trace.events if e.type == "blackboard.Entry")
    folds = [d for d in entry.deliveries.values() if d.agent == "ticker"]
    assert len(folds) == 2
    assert {d.outcome for d in folds} == {"handled"}
    assert len({d.consumer for d in folds}) == 2
    assert all(d.group == f"ticker:{d.consumer}" for d in folds)
    tree = render_tree(trace)
    for d in folds:
        assert f"ticker@{d.consumer}: handled" in tree
    poll = next(e for e in trace.events if e.type == "blackboard.Poll")
    assert Counter(d.agent for d in poll.deliveries.values()) == {"ticker": 1, "closer": 1}
    assert trace.filtered(agent="ticker").events  # filtering by agent still finds them


async def _auction(
    a: Runtime, b: Runtime | None, tasks: list[MarketTask]
) -> tuple[MarketOutcome, str]:
    for rt in (a, b):
        if rt is not None:
            await rt.start()
    async with a.run("market") as run:
        outcome = await run.request(
            market_topics(MARKET)["jobs"],
            MarketJob(tasks=list(tasks)),
            expect=MarketOutcome,
            timeout=30,
        )
    for rt in (a, b):
        if rt is not None:
            await rt.idle()
    return outcome, run.run_id


def _auctioneer() -> Auctioneer:
    return Auctioneer(MARKET, ["ann", "ben", "cat"], bid_timeout=5, contract_timeout=5)


async def test_bidders_bid_once_and_are_notified_once_however_many_replicas(
    make_runtime: MakeRuntime,
) -> None:
    tasks = [
        MarketTask(id="t1", skill="code", effort=2),
        MarketTask(id="t2", skill="code", effort=2),
        MarketTask(id="t3", skill="design", effort=1),
    ]
    rt1 = make_runtime(_auctioneer(), *team())
    single, single_run = await _auction(rt1, None, tasks)
    alone = _published(await rt1.journal.records(single_run))
    await rt1.aclose()  # else its bidders would be replicas too
    first, second = team(), team()
    a = make_runtime(_auctioneer(), *first)
    replicated, run_id = await _auction(a, make_runtime(*second), tasks)
    events = _published(await a.journal.records(run_id))
    bids = Counter(
        (e["data"]["auction_id"], e["data"]["bidder"]) for e in events if e["type"] == "market.Bid"
    )
    assert len(bids) == 9  # 3 auctions x 3 bidders
    assert set(bids.values()) == {1}, bids  # each answered once
    assert replicated.model_dump() == single.model_dump()
    assert _content(events) == _content(alone)
    # notified() is the logical bidder's: once per award, by one of its replicas.
    for one, two in zip(first, second, strict=True):
        heard = one.awards + two.awards
        assert Counter(task for task, _ in heard) == {t.id: 1 for t in tasks}
