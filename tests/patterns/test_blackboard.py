"""The blackboard coordinator on every transport: goal, quiescence, round limit, conflicts,
failing and silent sources, journal rebuild, and the incident war-room example."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agentbus import Agent, Context, Runtime
from agentbus.agents.offline import OfflineModel
from agentbus.patterns.blackboard import (
    BlackboardController,
    BoardEntry,
    BoardOutcome,
    BoardState,
    ContributeRequest,
    Contribution,
    Draft,
    Eligibility,
    KnowledgeSource,
    SolveBoard,
    Verdict,
    board_topics,
    by_priority,
    model_chooser,
    rebuild_board,
)

BOARD = "t"


@asynccontextmanager
async def hosting(url: str, *agents: Agent) -> AsyncIterator[Runtime]:
    # Agents are added before start, so every broadcast group exists before the run.
    rt = Runtime(url, retry_backoff=(0.01, 0.02), grace_period=0.3)
    rt.add(*agents)
    async with rt:
        yield rt


async def run_board(
    url: str, controller: BlackboardController, *sources: Agent, timeout: float = 30
) -> tuple[BoardOutcome, Runtime, str]:
    async with hosting(url, controller, *sources) as rt:
        async with rt.run("board") as run:
            outcome = await run.request(
                board_topics(controller.board)["control"],
                SolveBoard(problem={"goal": 3}),
                expect=BoardOutcome,
                timeout=timeout,
            )
        await rt.idle()
        steps = [r.record for r in await rt.journal.records(run.run_id) if r.kind == "step"]
        rebuilt = await rebuild_board(rt.journal, run.run_id, controller.board)
    assert rebuilt.history == outcome.state().history  # the board is the fold of its events
    return outcome, rt, str(steps)


class Ticker(KnowledgeSource, name="ticker"):
    """Adds ticks until the problem's goal count is reached."""

    board = BOARD
    priority = 1

    async def can_contribute(self, board: BoardState, ctx: Context) -> Verdict:
        problem = board.latest("problem")
        goal = problem.data["goal"] if problem else 0
        return len(board.items("tick")) < goal, "needs ticks"

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


def controller(sources: list[str], **options: Any) -> BlackboardController:
    options.setdefault("poll_timeout", 5.0)
    options.setdefault("contribute_timeout", 5.0)
    return BlackboardController(BOARD, sources, done, **options)


async def test_reaches_the_goal_and_journals_each_step(url_for: str) -> None:
    outcome, _, steps = await run_board(
        url_for, controller(["ticker", "closer"]), Ticker(), Closer()
    )
    assert outcome.ending == "goal"
    assert [h.chosen for h in outcome.history] == ["ticker", "ticker", "ticker", "closer"]
    assert [(e.kind, e.author) for e in outcome.entries] == [
        ("problem", "controller"),
        ("tick", "ticker"),
        ("tick", "ticker"),
        ("tick", "ticker"),
        ("done", "closer"),
    ]
    assert outcome.state().latest("done").data == {"ticks": 3}  # type: ignore[union-attr]
    for step in ("board-opened", "polled", "chose", "applied", "board-closed"):
        assert f"'step': '{step}'" in steps


class Alpha(Ticker, name="alpha"):
    priority = 3


class Beta(Ticker, name="beta"):
    priority = 3


class Gamma(Ticker, name="gamma"):
    priority = 2


async def test_priority_then_name_decides_among_eligible(url_for: str) -> None:
    ctl = controller(["gamma", "beta", "alpha"], max_rounds=1)
    outcome, _, _ = await run_board(url_for, ctl, Gamma(), Beta(), Alpha())
    assert outcome.history[0].eligible == ["alpha", "beta", "gamma"]
    assert outcome.history[0].chosen == "alpha"  # priority 3 ties with beta; the name decides
    assert outcome.ending == "round_limit"


class Idle(KnowledgeSource, name="idle"):
    board = BOARD


async def test_quiescence_when_no_source_is_eligible(url_for: str) -> None:
    outcome, _, steps = await run_board(url_for, controller(["idle"]), Idle())
    assert outcome.ending == "quiescent"
    assert outcome.rounds == 1
    assert outcome.version == 1  # only the problem
    assert "'step': 'quiescent'" in steps


async def test_round_limit_ends_an_endless_board(url_for: str) -> None:
    ticker = Ticker()
    outcome, _, _ = await run_board(url_for, controller(["ticker"], max_rounds=2), ticker)
    assert outcome.ending == "round_limit"
    assert outcome.rounds == 2
    assert [e.kind for e in outcome.entries] == ["problem", "tick", "tick"]


class Stale(Ticker, name="stale"):
    """Proposes every write for the first version it ever saw (a stale view)."""

    first: int | None = None

    async def propose(self, request: ContributeRequest, ctx: Context) -> Contribution:
        proposal = await super().propose(request, ctx)
        if self.first is None:
            self.first = proposal.expected_version
        return proposal.model_copy(update={"expected_version": self.first})


async def test_conflicting_writes_are_rejected(url_for: str) -> None:
    outcome, _, steps = await run_board(url_for, controller(["stale"], max_rounds=3), Stale())
    assert [h.result for h in outcome.history] == ["applied", "conflict", "conflict"]
    assert outcome.conflicts == 2
    assert [e.kind for e in outcome.entries] == ["problem", "tick"]
    assert "'step': 'conflict'" in steps


class Crashing(Ticker, name="crashing"):
    priority = 9

    async def contribute(self, board: BoardState, ctx: Context) -> Draft:
        raise RuntimeError("analysis crashed")


async def test_a_crashing_source_is_dropped_and_the_board_goes_on(url_for: str) -> None:
    ctl = controller(["crashing", "ticker", "closer"])
    outcome, _, steps = await run_board(url_for, ctl, Crashing(), Ticker(), Closer())
    assert outcome.history[0].chosen == "crashing"
    assert outcome.history[0].result == "failed"
    assert "analysis crashed" in outcome.history[0].detail
    assert outcome.failed_sources == ["crashing"]
    assert "crashing" not in {c for h in outcome.history[1:] for c in h.eligible}
    assert outcome.ending == "goal"
    assert "'step': 'contribution-failed'" in steps


class Hanging(Ticker, name="hanging"):
    priority = 9

    async def contribute(self, board: BoardState, ctx: Context) -> Draft:
        await asyncio.sleep(1.0)  # far past the controller's contribute_timeout
        return Draft(kind="late")


async def test_a_source_that_times_out_is_dropped(url_for: str) -> None:
    ctl = controller(["hanging", "ticker", "closer"], contribute_timeout=0.3)
    outcome, _, _ = await run_board(url_for, ctl, Hanging(), Ticker(), Closer())
    assert outcome.history[0].result == "failed"
    assert "RequestTimeout" in outcome.history[0].detail
    assert outcome.failed_sources == ["hanging"]
    assert outcome.ending == "goal"
    assert "late" not in {e.kind for e in outcome.entries}


async def test_a_silent_source_is_waited_for_until_the_deadline(url_for: str) -> None:
    # "ghost" is registered but never hosted, like a source whose process died.
    ctl = controller(["ghost", "ticker", "closer"], poll_timeout=0.2)
    outcome, _, _ = await run_board(url_for, ctl, Ticker(), Closer())
    assert outcome.ending == "goal"
    assert all(h.silent == ["ghost"] for h in outcome.history)


class Confused(Ticker, name="confused"):
    async def can_contribute(self, board: BoardState, ctx: Context) -> Verdict:
        raise ValueError("cannot read the board")


async def test_a_failing_judgement_is_reported_without_waiting(url_for: str) -> None:
    ctl = controller(["confused", "ticker", "closer"], poll_timeout=60)
    outcome, _, steps = await run_board(url_for, ctl, Confused(), Ticker(), Closer(), timeout=20)
    assert outcome.ending == "goal"  # would take 4 minutes if polls waited for the deadline
    assert "cannot read the board" in steps


class Forgetful(Ticker, name="forgetful"):
    """Never receives board entries itself, so it must catch up from the journal."""

    sync_timeout = 0.05

    async def _on_entry(self, entry: BoardEntry, ctx: Context) -> None:
        return None


async def test_a_source_that_missed_entries_catches_up_from_the_journal(url_for: str) -> None:
    outcome, _, _ = await run_board(url_for, controller(["forgetful"], max_rounds=3), Forgetful())
    assert [e.kind for e in outcome.entries] == ["problem", "tick", "tick", "tick"]
    assert [e.data for e in outcome.state().items("tick")] == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_a_second_solve_resumes_the_board_from_the_journal(url_for: str) -> None:
    ctl = controller(["ticker", "closer"])
    async with hosting(url_for, ctl, Ticker(), Closer()) as rt, rt.run("board") as run:
        first = await run.request(
            board_topics(BOARD)["control"],
            SolveBoard(problem={"goal": 3}),
            expect=BoardOutcome,
            timeout=30,
        )
        again = await run.request(
            board_topics(BOARD)["control"],
            SolveBoard(problem={"goal": 3}),
            expect=BoardOutcome,
            timeout=30,
        )
    assert first.ending == again.ending == "goal"
    assert again.rounds == first.rounds
    assert again.history == []
    assert again.entries == first.entries


async def test_a_failed_controller_resumes_the_board_from_the_journal(url_for: str) -> None:
    calls: list[int] = []

    async def crashes_once(
        candidates: Sequence[Eligibility], board: BoardState, ctx: Context
    ) -> str:
        calls.append(board.version)
        if len(calls) == 3:
            raise RuntimeError("controller crashed")
        return await by_priority(candidates, board, ctx)

    ctl = controller(["ticker", "closer"], chooser=crashes_once)
    outcome, _, steps = await run_board(url_for, ctl, Ticker(), Closer())
    assert outcome.ending == "goal"
    # The retried solve continued the board; it did not write the problem or ticks twice.
    assert [e.kind for e in outcome.entries] == ["problem", "tick", "tick", "tick", "done"]
    assert [h.round for h in outcome.history] == [3, 4]
    assert "'step': 'board-resumed'" in steps


async def test_model_chooser_picks_an_eligible_source_through_the_journal() -> None:
    ctl = controller(["alpha", "beta"], max_rounds=1, chooser=model_chooser(OfflineModel()))
    async with hosting("memory://?journal=", ctl, Alpha(), Beta()) as rt:
        async with rt.run("board") as run:
            outcome = await run.request(
                board_topics(BOARD)["control"],
                SolveBoard(problem={"goal": 3}),
                expect=BoardOutcome,
                timeout=30,
            )
        await rt.idle()
        calls = [r.record for r in await rt.journal.records(run.run_id) if r.kind == "model_call"]
    assert outcome.history[0].chosen in {"alpha", "beta"}
    assert len(calls) == 1
    assert "response" in calls[0]


def test_board_state_folds_in_version_order_and_updates_items_by_key() -> None:
    def entry(version: int, kind: str, key: str, **data: Any) -> BoardEntry:
        return BoardEntry(
            board="b", version=version, kind=kind, key=key, data=data, author="x", round=1
        )

    entries = [entry(2, "h", "h1", status="rejected"), entry(1, "h", "h1", status="proposed")]
    state = BoardState.fold("b", entries)
    assert state.version == 2
    assert [e.data["status"] for e in state.history] == ["proposed", "rejected"]
    assert state.has("h", status="rejected")
    assert not state.has("h", status="proposed")
    with pytest.raises(ValueError, match="does not follow"):
        state.apply(entry(4, "h", "h2"))
    with pytest.raises(ValueError, match="does not follow"):
        BoardState.fold("b", [entry(2, "h", "h1")])


def test_eligibility_is_a_plain_message() -> None:
    reply = Eligibility(board="b", poll_id="b-r1", source="s", eligible=True, priority=2)
    assert Eligibility.model_validate(reply.model_dump()) == reply


# -- the incident war-room example ------------------------------------------------------------------
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "incident_war_room.py"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("incident_war_room_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def war_room(url: str) -> tuple[Any, list[tuple[str, str, dict[str, Any]]], list[Any]]:
    example = load_example()
    rt = Runtime(url)
    rt.add(*example.app.build_agents())
    async with rt:
        async with rt.run("war-room") as run:
            report = await example.main(run)
        await rt.idle()
        records = await rt.journal.records(run.run_id)
    entries = [
        (e["data"]["kind"], e["data"]["author"], e["data"]["data"])
        for e in (
            r.record["event"]
            for r in records
            if r.kind == "published" and r.record["event"]["type"] == "blackboard.Entry"
        )
    ]
    skip = {"time", "event_id"}
    steps = [
        {k: v for k, v in r.record.items() if k not in skip} for r in records if r.kind == "step"
    ]
    return report, entries, steps


async def test_incident_war_room_finds_the_root_cause(url_for: str) -> None:
    report, entries, _ = await war_room(url_for)
    assert report.ending == "goal"
    assert report.root_cause.startswith("D-885: payments-service v2.4.1")
    assert report.fix.startswith("roll payments-service back from v2.4.1 to v2.4.0")
    assert [r.split(":")[0] for r in report.rejected] == ["D-886"]
    assert [kind for kind, _, _ in entries][-2:] == ["root_cause", "fix"]


async def test_war_room_results_are_identical_on_memory_and_redis(
    redis_url: str, redis_prefix: str
) -> None:
    on_memory = await war_room("memory://?journal=")
    on_redis = await war_room(f"{redis_url}?prefix={redis_prefix}")
    assert on_memory[0].model_dump() == on_redis[0].model_dump()  # the report
    assert on_memory[1] == on_redis[1]  # every board entry, in order
    assert on_memory[2] == on_redis[2]  # every coordinator step, in order
