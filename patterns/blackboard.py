"""Blackboard: knowledge sources build a solution on a shared, event-sourced board.

::

    controller = BlackboardController(
        "incident", sources=["log-analyst", "fixer"], goal=lambda b: b.has("fix")
    )
    app = App("war-room", [controller, LogAnalyst, Fixer])

    @app.main
    async def main(run: Run) -> BoardOutcome:
        return await solve(run, "incident", problem={"alert": "..."})

Each round the controller broadcasts a :class:`BoardPoll` ("the board is at version
N"); every registered source answers with an :class:`Eligibility`. When all have
answered (or ``poll_timeout`` passed) it picks one eligible source (by priority, ties by
name, or by a model), requests its :class:`Contribution`, and appends the drafted
entries to the board's topic if the contribution was made for the current version;
otherwise it rejects the write as a conflict. The board ends when ``goal(board)`` holds
(``goal``), when no source is eligible (``quiescent``) or after ``max_rounds``
(``round_limit``). Every step is noted in the run's journal (``pattern="blackboard"``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agentbus import (
    Agent,
    Context,
    HandlerSpec,
    Message,
    Reject,
    RemoteError,
    RequestTimeout,
    Run,
    UsageError,
)

from .bb_board import (
    BoardClosed,
    BoardEntry,
    BoardOutcome,
    BoardPoll,
    BoardState,
    ContributeRequest,
    Contribution,
    Draft,
    Eligibility,
    Ending,
    RoundRecord,
    SolveBoard,
    board_topics,
    rebuild_board,
)
from .bb_choosers import Chooser, by_priority, model_chooser, ranked
from .bb_source import KnowledgeSource, Verdict
from .bb_view import SequencedView, StaleView

__all__ = [
    "BlackboardController",
    "BoardClosed",
    "BoardEntry",
    "BoardOutcome",
    "BoardPoll",
    "BoardState",
    "Chooser",
    "ContributeRequest",
    "Contribution",
    "Draft",
    "Eligibility",
    "Ending",
    "Goal",
    "KnowledgeSource",
    "RoundRecord",
    "SequencedView",
    "SolveBoard",
    "StaleView",
    "Verdict",
    "board_topics",
    "by_priority",
    "model_chooser",
    "ranked",
    "rebuild_board",
    "solve",
]

#: The goal predicate: is the board solved?
Goal = Callable[[BoardState], bool]
_CONTROLLER = "controller"


@dataclass
class _Poll:
    expected: frozenset[str]
    replies: dict[str, Eligibility] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class BlackboardController(Agent):
    """Drives one board: polls sources, picks one per round, guards writes, ends.

    ``sources`` names every registered knowledge source (the controller waits for all
    of them each round). ``chooser`` defaults to :func:`by_priority`. A source whose
    contribution fails or times out ``max_source_failures`` times is left out of later
    rounds. Raises :class:`UsageError` for an empty source list or bad limits.
    """

    def __init__(
        self,
        board: str,
        sources: Iterable[str],
        goal: Goal,
        *,
        max_rounds: int = 10,
        chooser: Chooser | None = None,
        poll_timeout: float = 5.0,
        contribute_timeout: float = 30.0,
        max_source_failures: int = 1,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name or f"blackboard-{board}")
        self.board = board
        self.sources = tuple(sorted(set(sources)))
        if not self.sources:
            raise UsageError(f"board {board!r} needs at least one knowledge source")
        if max_rounds < 1 or max_source_failures < 1 or poll_timeout <= 0:
            raise UsageError(
                "max_rounds and max_source_failures must be at least 1 and poll_timeout "
                f"positive, got {max_rounds!r}, {max_source_failures!r}, {poll_timeout!r}"
            )
        self.goal = goal
        self.max_rounds = max_rounds
        self.chooser: Chooser = chooser or by_priority
        self.poll_timeout = poll_timeout
        self.contribute_timeout = contribute_timeout
        self.max_source_failures = max_source_failures
        self.topics = board_topics(board)
        self._polls: dict[tuple[str, str], _Poll] = {}
        self._solving: set[str] = set()

    def handlers(self) -> list[tuple[HandlerSpec, tuple[type[Message], ...]]]:
        """Solve requests (shared) and eligibility replies (broadcast: every replica
        sees every reply and keeps those of the polls it is waiting for).

        A solve that failed or whose controller died is delivered again (up to the
        runtime's ``max_attempts``) and resumes the board from the journal.
        """
        specs = [
            HandlerSpec(self.topics["control"], "_on_solve", "shared", (SolveBoard,), None, False, None, None),
            HandlerSpec(self.topics["replies"], "_on_reply", "broadcast", (Eligibility,), None, False, None, None),
        ]  # fmt: skip
        return [*super().handlers(), *((s, s.message_types or ()) for s in specs)]

    async def _on_reply(self, reply: Eligibility, ctx: Context) -> None:
        poll = self._polls.get((ctx.run_id or "", reply.poll_id))
        if poll is None or reply.source not in poll.expected or reply.source in poll.replies:
            return  # another replica's poll, a stranger, or a redelivered duplicate
        poll.replies[reply.source] = reply
        if poll.expected <= poll.replies.keys():
            poll.done.set()

    async def _on_solve(self, task: SolveBoard, ctx: Context) -> BoardOutcome:
        if task.board != self.board:
            raise Reject(f"controller of board {self.board!r} got a task for {task.board!r}")
        run_id = ctx.run_id or ""
        if run_id in self._solving:
            # Two solves of one board in one run would interleave their writes.
            raise Reject(f"board {self.board!r} is already being solved in run {run_id!r}")
        self._solving.add(run_id)
        try:
            return await _Session(self, ctx).solve(task)
        finally:
            self._solving.discard(run_id)


class _Session:
    """One solve of the board: the loop and its bookkeeping."""

    def __init__(self, ctl: BlackboardController, ctx: Context) -> None:
        self.ctl = ctl
        self.ctx = ctx
        self.state = BoardState(ctl.board)
        self.history: list[RoundRecord] = []
        self.failures: dict[str, int] = {}
        self.conflicts = 0

    async def note(self, step: str, **details: object) -> None:
        await self.ctx.note(step, pattern="blackboard", board=self.ctl.board, **details)

    async def write(self, drafts: list[Draft], author: str, round_: int) -> None:
        for draft in drafts:
            entry = BoardEntry(
                board=self.ctl.board,
                version=self.state.version + 1,
                kind=draft.kind,
                key=draft.key or f"{draft.kind}-{self.state.version + 1}",
                data=draft.data,
                author=author,
                round=round_,
            )
            await self.ctx.publish(entry, self.ctl.topics["entries"], key=self.ctl.board)
            self.state = self.state.apply(entry)

    async def solve(self, task: SolveBoard) -> BoardOutcome:
        ctl, ctx = self.ctl, self.ctx
        # The board is the fold of its entries: a controller restarted mid-run (its
        # request redelivered) resumes the board from the journal instead of forking it.
        self.state = await rebuild_board(ctx.runtime.journal, ctx.run_id or "", ctl.board)
        first_round = 1
        if self.state.version:
            first_round = self.state.history[-1].round + 1
            await self.note("board-resumed", version=self.state.version)
        else:
            await self.write(
                [Draft(kind="problem", data=task.problem, key="problem")], _CONTROLLER, 0
            )
            await self.write(task.seed, _CONTROLLER, 0)
            await self.note("board-opened", version=self.state.version, sources=list(ctl.sources))
        ending: Ending = "round_limit"
        reason = f"no goal after {ctl.max_rounds} rounds"
        rounds = first_round - 1
        if ctl.goal(self.state):
            ending, reason = "goal", "the goal held from the start"
        else:
            for round_ in range(first_round, ctl.max_rounds + 1):
                rounds = round_
                record = await self.round(round_)
                self.history.append(record)
                if record.result == "quiescent":
                    ending, reason = "quiescent", "no knowledge source could contribute"
                    break
                if ctl.goal(self.state):
                    ending, reason = "goal", f"the goal holds at version {self.state.version}"
                    break
        closed = BoardClosed(
            board=ctl.board, ending=ending, reason=reason, rounds=rounds, version=self.state.version
        )
        await ctx.publish(closed, ctl.topics["entries"], key=ctl.board)
        await self.note(
            "board-closed", ending=ending, reason=reason, rounds=rounds, version=self.state.version
        )
        return BoardOutcome(
            board=ctl.board,
            ending=ending,
            reason=reason,
            rounds=rounds,
            version=self.state.version,
            entries=list(self.state.history),
            history=self.history,
            conflicts=self.conflicts,
            failed_sources=sorted(s for s, n in self.failures.items() if n >= ctl.max_source_failures),
        )  # fmt: skip

    async def round(self, round_: int) -> RoundRecord:
        ctl, version = self.ctl, self.state.version
        active = [s for s in ctl.sources if self.failures.get(s, 0) < ctl.max_source_failures]
        replies = await self.poll(round_, active) if active else {}
        silent = [s for s in active if s not in replies]
        eligible = [r for r in replies.values() if r.eligible]
        names = sorted(r.source for r in eligible)
        if not eligible:
            await self.note("quiescent", round=round_, version=version, silent=silent)
            return RoundRecord(
                round=round_, eligible=[], silent=silent, result="quiescent", version=version
            )
        chosen = await ctl.chooser(eligible, self.state, self.ctx)
        if chosen not in names:
            raise UsageError(f"the chooser picked {chosen!r}, not one of the eligible {names!r}")
        await self.note("chose", round=round_, source=chosen, eligible=[
            {"source": r.source, "priority": r.priority, "reason": r.reason}
            for r in sorted(eligible, key=lambda r: (-r.priority, r.source))
        ])  # fmt: skip
        base = {"round": round_, "eligible": names, "silent": silent, "chosen": chosen}
        request = ContributeRequest(board=ctl.board, round=round_, version=version)
        try:
            contribution: Contribution = await self.ctx.request(
                ctl.topics["source"] + chosen, request, timeout=ctl.contribute_timeout, expect=Contribution
            )  # fmt: skip
        except (RequestTimeout, RemoteError) as exc:
            self.failures[chosen] = self.failures.get(chosen, 0) + 1
            detail = f"{type(exc).__name__}: {exc}"
            await self.note("contribution-failed", round=round_, source=chosen, error=detail)
            return RoundRecord(**base, result="failed", version=version, detail=detail)
        if contribution.expected_version != version:
            self.conflicts += 1
            detail = f"written for version {contribution.expected_version}, board is at {version}"
            await self.note(
                "conflict",
                round=round_,
                source=chosen,
                expected=contribution.expected_version,
                version=version,
            )
            return RoundRecord(**base, result="conflict", version=version, detail=detail)
        if not contribution.drafts:
            await self.note("no-contribution", round=round_, source=chosen)
            return RoundRecord(**base, result="empty", version=version)
        await self.write(contribution.drafts, chosen, round_)
        kinds = [d.kind for d in contribution.drafts]
        await self.note(
            "applied", round=round_, source=chosen, kinds=kinds, version=self.state.version
        )
        return RoundRecord(**base, result="applied", version=self.state.version, detail=", ".join(kinds))  # fmt: skip

    async def poll(self, round_: int, active: list[str]) -> dict[str, Eligibility]:
        ctl, run_id = self.ctl, self.ctx.run_id or ""
        poll_id = f"{ctl.board}-r{round_}"  # deterministic, so a replayed run polls alike
        waiting = _Poll(frozenset(active))
        ctl._polls[(run_id, poll_id)] = waiting
        try:
            poll = BoardPoll(
                board=ctl.board, poll_id=poll_id, round=round_, version=self.state.version
            )
            await self.ctx.publish(poll, ctl.topics["poll"], key=ctl.board)
            try:
                await asyncio.wait_for(waiting.done.wait(), ctl.poll_timeout)
            except TimeoutError:
                pass  # the deadline: decide with the replies we have
        finally:
            del ctl._polls[(run_id, poll_id)]
        replies = {s: waiting.replies[s] for s in sorted(waiting.replies)}
        errors = {s: r.error for s, r in replies.items() if r.error}
        await self.note(
            "polled",
            round=round_,
            version=self.state.version,
            eligible=sorted(s for s, r in replies.items() if r.eligible),
            silent=sorted(set(active) - replies.keys()),
            errors=errors,
        )
        return replies


async def solve(
    run: Run,
    board: str,
    *,
    problem: dict[str, object] | None = None,
    seed: Iterable[Draft] = (),
    timeout: float = 300.0,
) -> BoardOutcome:
    """Ask the controller of ``board`` to solve ``problem`` within ``run``.

    Raises :class:`RequestTimeout` after ``timeout`` seconds and :class:`RemoteError`
    when the controller failed.
    """
    task = SolveBoard(board=board, problem=dict(problem or {}), seed=list(seed))
    outcome: BoardOutcome = await run.request(
        board_topics(board)["control"], task, timeout=timeout, expect=BoardOutcome
    )
    return outcome
