"""The blackboard controller: polls sources, picks one per round, guards writes, ends."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from agentbus import Agent, Context, Reject, Run, UsageError

from ._board import BoardOutcome, Draft, Eligibility, SolveBoard, board_topics
from ._choosers import Chooser, by_priority
from ._session import BoardSession, BoardSettings, Goal, Poll

__all__ = ["BlackboardController", "solve"]


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
        # Solve requests are shared (one replica solves each) and may be delivered again: a
        # solve that failed or whose controller died resumes the board from the journal.
        # Eligibility replies are broadcast: every replica sees every reply and keeps those
        # of the polls it is waiting for.
        self.bind(self.topics["control"], self._on_solve, message=SolveBoard)
        self.bind(self.topics["replies"], self._on_reply, message=Eligibility, mode="broadcast")

    @property
    def topic(self) -> str:
        """Where the controller takes :class:`SolveBoard` requests (the board's control topic)."""
        return self.topics["control"]

    def settings(self) -> BoardSettings:
        """This controller's configuration, frozen, as a solve uses it."""
        return BoardSettings(
            board=self.board,
            sources=self.sources,
            goal=self.goal,
            chooser=self.chooser,
            max_rounds=self.max_rounds,
            poll_timeout=self.poll_timeout,
            contribute_timeout=self.contribute_timeout,
            max_source_failures=self.max_source_failures,
            topics=dict(self.topics),
        )

    async def _on_reply(self, reply: Eligibility, ctx: Context) -> None:
        poll = self.polls.get((ctx.run_id or "", reply.poll_id))
        if poll is None or reply.source not in poll.expected or reply.source in poll.replies:
            return  # another replica's poll, a stranger, or a redelivered duplicate
        poll.replies[reply.source] = reply
        if poll.expected <= poll.replies.keys():
            poll.done.set()

    async def _on_solve(self, task: SolveBoard, ctx: Context) -> BoardOutcome:
        if task.board not in ("", self.board):
            raise Reject(f"controller of board {self.board!r} got a task for {task.board!r}")
        run_id = ctx.run_id or ""
        if run_id in self._solving:
            # Two solves of one board in one run would interleave their writes.
            raise Reject(f"board {self.board!r} is already being solved in run {run_id!r}")
        self._solving.add(run_id)
        try:
            return await BoardSession(self.settings(), self.polls, ctx).solve(task)
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
    """Deprecated: ``await run.request(controller.topic, SolveBoard(problem=...), expect=BoardOutcome)``.

    Every pattern is started the same way, with a request of its job message to its
    coordinator's ``topic``; this helper does that for ``board`` and warns.
    Raises :class:`RequestTimeout` after ``timeout`` seconds and :class:`RemoteError`
    when the controller failed.
    """
    warnings.warn(
        "agentbus.patterns.blackboard.solve() is deprecated: use "
        "run.request(controller.topic, SolveBoard(problem=...), expect=BoardOutcome)",
        DeprecationWarning,
        stacklevel=2,
    )
    task = SolveBoard(board=board, problem=dict(problem or {}), seed=list(seed))
    outcome: BoardOutcome = await run.request(
        board_topics(board)["control"], task, timeout=timeout, expect=BoardOutcome
    )
    return outcome
