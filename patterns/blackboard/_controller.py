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

from collections.abc import Callable, Iterable

from agentbus import Agent, Context, HandlerSpec, Message, Reject, Run, UsageError

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
from .bb_session import BoardSession, Poll
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
        self.polls: dict[tuple[str, str], Poll] = {}
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
        poll = self.polls.get((ctx.run_id or "", reply.poll_id))
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
            return await BoardSession(self, ctx).solve(task)
        finally:
            self._solving.discard(run_id)


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
