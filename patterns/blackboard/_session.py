"""One solve of a blackboard: rounds of poll, choose, contribute, guard, apply.

Kept apart from the controller agent so that all per-solve state lives in one object
that is dropped when the solve ends (or fails and is delivered again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agentbus import Context, RemoteError, RequestTimeout, UsageError

from ._board import (
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
    rebuild_board,
)
from ._choosers import Chooser

__all__ = ["BoardSession", "BoardSettings", "Goal", "Poll"]

#: The goal predicate: is the board solved?
Goal = Callable[[BoardState], bool]

_CONTROLLER = "controller"


@dataclass
class Poll:
    """The replies to one poll as they arrive (filled by the broadcast reply handler)."""

    expected: frozenset[str]
    replies: dict[str, Eligibility] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class BoardSettings:
    """What a solve needs of its controller: the board, its sources, goal and limits."""

    board: str
    sources: tuple[str, ...]
    goal: Goal
    chooser: Chooser
    max_rounds: int
    poll_timeout: float
    contribute_timeout: float
    max_source_failures: int
    topics: Mapping[str, str]


class BoardSession:
    """One solve of the board: the loop and its bookkeeping.

    ``polls`` is the controller's registry of open polls, which its broadcast reply
    handler fills; the session opens and closes its own polls there.
    """

    def __init__(
        self, settings: BoardSettings, polls: dict[tuple[str, str], Poll], ctx: Context
    ) -> None:
        self.cfg = settings
        self.polls = polls
        self.ctx = ctx
        self.state = BoardState(settings.board)
        self.history: list[RoundRecord] = []
        self.failures: dict[str, int] = {}
        self.conflicts = 0

    async def note(self, step: str, **details: object) -> None:
        await self.ctx.note(step, pattern="blackboard", board=self.cfg.board, **details)

    async def write(self, drafts: list[Draft], author: str, round_: int) -> None:
        for draft in drafts:
            entry = BoardEntry(
                board=self.cfg.board,
                version=self.state.version + 1,
                kind=draft.kind,
                key=draft.key or f"{draft.kind}-{self.state.version + 1}",
                data=draft.data,
                author=author,
                round=round_,
            )
            await self.ctx.publish(self.cfg.topics["entries"], entry, key=self.cfg.board)
            self.state = self.state.apply(entry)

    async def solve(self, task: SolveBoard) -> BoardOutcome:
        cfg, ctx = self.cfg, self.ctx
        # The board is the fold of its entries: a controller restarted mid-run (its
        # request redelivered) resumes the board from the journal instead of forking it.
        self.state = await rebuild_board(ctx.runtime.journal, ctx.run_id or "", cfg.board)
        first_round = 1
        if self.state.version:
            first_round = self.state.history[-1].round + 1
            await self.note("board-resumed", version=self.state.version)
        else:
            await self.write(
                [Draft(kind="problem", data=task.problem, key="problem")], _CONTROLLER, 0
            )
            await self.write(task.seed, _CONTROLLER, 0)
            await self.note("board-opened", version=self.state.version, sources=list(cfg.sources))
        ending: Ending = "round_limit"
        reason = f"no goal after {cfg.max_rounds} rounds"
        rounds = first_round - 1
        if cfg.goal(self.state):
            ending, reason = "goal", "the goal held from the start"
        else:
            for round_ in range(first_round, cfg.max_rounds + 1):
                rounds = round_
                record = await self.round(round_)
                self.history.append(record)
                if record.result == "quiescent":
                    ending, reason = "quiescent", "no knowledge source could contribute"
                    break
                if cfg.goal(self.state):
                    ending, reason = "goal", f"the goal holds at version {self.state.version}"
                    break
        closed = BoardClosed(
            board=cfg.board, ending=ending, reason=reason, rounds=rounds, version=self.state.version
        )
        await ctx.publish(cfg.topics["entries"], closed, key=cfg.board)
        await self.note(
            "board-closed", ending=ending, reason=reason, rounds=rounds, version=self.state.version
        )
        return BoardOutcome(
            board=cfg.board,
            ending=ending,
            reason=reason,
            rounds=rounds,
            version=self.state.version,
            entries=list(self.state.history),
            history=self.history,
            conflicts=self.conflicts,
            failed_sources=sorted(s for s, n in self.failures.items() if n >= cfg.max_source_failures),
        )  # fmt: skip

    async def round(self, round_: int) -> RoundRecord:
        cfg, version = self.cfg, self.state.version
        active = [s for s in cfg.sources if self.failures.get(s, 0) < cfg.max_source_failures]
        replies = await self.poll(round_, active) if active else {}
        silent = [s for s in active if s not in replies]
        eligible = [r for r in replies.values() if r.eligible]
        names = sorted(r.source for r in eligible)
        if not eligible:
            await self.note("quiescent", round=round_, version=version, silent=silent)
            return RoundRecord(
                round=round_, eligible=[], silent=silent, result="quiescent", version=version
            )
        chosen = await cfg.chooser(eligible, self.state, self.ctx)
        if chosen not in names:
            raise UsageError(f"the chooser picked {chosen!r}, not one of the eligible {names!r}")
        await self.note("chose", round=round_, source=chosen, eligible=[
            {"source": r.source, "priority": r.priority, "reason": r.reason}
            for r in sorted(eligible, key=lambda r: (-r.priority, r.source))
        ])  # fmt: skip
        base = {"round": round_, "eligible": names, "silent": silent, "chosen": chosen}
        request = ContributeRequest(board=cfg.board, round=round_, version=version)
        try:
            contribution: Contribution = await self.ctx.request(
                cfg.topics["source"] + chosen, request, timeout=cfg.contribute_timeout, expect=Contribution
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
        cfg, run_id = self.cfg, self.ctx.run_id or ""
        poll_id = f"{cfg.board}-r{round_}"  # deterministic, so a replayed run polls alike
        waiting = Poll(frozenset(active))
        self.polls[(run_id, poll_id)] = waiting
        try:
            poll = BoardPoll(
                board=cfg.board, poll_id=poll_id, round=round_, version=self.state.version
            )
            await self.ctx.publish(cfg.topics["poll"], poll, key=cfg.board)
            try:
                await asyncio.wait_for(waiting.done.wait(), cfg.poll_timeout)
            except TimeoutError:
                pass  # the deadline: decide with the replies we have
        finally:
            del self.polls[(run_id, poll_id)]
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
