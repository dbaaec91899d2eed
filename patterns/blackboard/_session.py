"""One solve of a blackboard: rounds of poll, choose, contribute, guard, apply.

Kept apart from the controller agent so that all per-solve state lives in one object
that is dropped when the solve ends (or fails and is delivered again).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentbus import Context, RemoteError, RequestTimeout, UsageError

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
    rebuild_board,
)

if TYPE_CHECKING:
    from .blackboard import BlackboardController

__all__ = ["BoardSession", "Poll"]

_CONTROLLER = "controller"


@dataclass
class Poll:
    """The replies to one poll as they arrive (filled by the broadcast reply handler)."""

    expected: frozenset[str]
    replies: dict[str, Eligibility] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class BoardSession:
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
        waiting = Poll(frozenset(active))
        ctl.polls[(run_id, poll_id)] = waiting
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
            del ctl.polls[(run_id, poll_id)]
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
