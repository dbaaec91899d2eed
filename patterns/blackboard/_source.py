"""Knowledge sources: agents that watch a blackboard and contribute entries to it.

::

    class LogAnalyst(KnowledgeSource, name="log-analyst"):
        board = "incident"
        priority = 30

        async def can_contribute(self, board: BoardState, ctx: Context) -> Verdict:
            return board.latest("finding") is None, "no findings yet"

        async def contribute(self, board: BoardState, ctx: Context) -> Draft | None:
            return Draft(kind="finding", data={...})

Every replica of a source subscribes (broadcast) to the board's entries, keeping its
own fold of them. Polls and contribution requests are the logical source's (shared):
one replica answers each, so a source hosted by N processes answers once, as in one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentbus import Agent, Context, UsageError

from ..common import SequencedView
from ._board import (
    BoardEntry,
    BoardPoll,
    BoardState,
    ContributeRequest,
    Contribution,
    Draft,
    Eligibility,
    board_topics,
)

__all__ = ["KnowledgeSource", "Verdict"]

#: ``can_contribute`` answers ``True``/``False``, or ``(eligible, reason)``.
Verdict = bool | tuple[bool, str]
"""What :meth:`KnowledgeSource.can_contribute` returns: eligible or not, optionally with a
reason for the trace, e.g. ``True`` or ``(False, "no findings yet")``."""


class KnowledgeSource(Agent):
    """Base class of blackboard knowledge sources.

    Set ``board`` (the board's name) and ``priority`` (higher is chosen first when
    several sources are eligible) on the class or per instance. Override
    :meth:`can_contribute` and :meth:`contribute`. ``sync_timeout`` bounds how long a
    poll waits for board entries still in flight before reading them from the journal.

    Raises :class:`UsageError` when no board is set.
    """

    board: str = ""
    priority: int = 0
    sync_timeout: float = 2.0

    def __init__(
        self, *, name: str | None = None, board: str | None = None, priority: int | None = None
    ) -> None:
        super().__init__(name=name)
        if board is not None:
            self.board = board
        if priority is not None:
            self.priority = priority
        if not self.board:
            raise UsageError(f"knowledge source {self.name!r} needs a board name (board=...)")
        self.topics = board_topics(self.board)
        self.view: SequencedView[BoardEntry] = SequencedView(
            BoardEntry, self.topics["entries"], lambda e: e.version
        )
        # Folding is every replica's own (broadcast); answering a poll is the logical
        # source's (shared: one replica answers, once however many processes host it, from
        # its fold at the version the poll names). Polls start at new entries: a source
        # that joins must not answer the polls of ended runs.
        topics = self.topics
        self.bind(topics["entries"], self._on_entry, message=BoardEntry, mode="broadcast")
        self.bind(topics["poll"], self._on_poll, message=BoardPoll, from_start=False)
        self.bind(topics["source"] + self.name, self._on_contribute, message=ContributeRequest)

    # -- what subclasses implement -------------------------------------------------------------
    async def can_contribute(self, board: BoardState, ctx: Context) -> Verdict:
        """Whether this source has something to add to ``board`` now (default: no)."""
        return False

    async def contribute(self, board: BoardState, ctx: Context) -> Draft | Sequence[Draft] | None:
        """The entries to write on ``board`` (``None`` or ``[]`` when nothing after all).

        Exceptions are retried by the runtime, then reported to the controller, which
        counts the source as failed.
        """
        return None

    async def propose(self, request: ContributeRequest, ctx: Context) -> Contribution:
        """Answer a contribution request; override for full control over the proposal.

        The default folds the board at the requested version, calls :meth:`contribute`
        and proposes its drafts for exactly that version.
        """
        board = await self.board_at(ctx, request.version)
        produced = await self.contribute(board, ctx)
        drafts = (
            []
            if produced is None
            else [produced]
            if isinstance(produced, Draft)
            else list(produced)
        )
        return Contribution(
            board=self.board, source=self.name, expected_version=board.version, drafts=drafts
        )

    async def board_at(self, ctx: Context, version: int) -> BoardState:
        """The board at ``version`` as this source has watched it.

        Raises :class:`~patterns.blackboard.StaleView` when its entries cannot be gathered.
        """
        entries = await self.view.upto(ctx, version, timeout=self.sync_timeout)
        return BoardState.fold(self.board, entries)

    # -- handlers --------------------------------------------------------------------------------
    async def _on_entry(self, entry: BoardEntry, ctx: Context) -> None:
        if ctx.run_id is not None:
            await self.view.add(ctx.run_id, entry)

    async def _on_poll(self, poll: BoardPoll, ctx: Context) -> None:
        # Any failure to decide is answered, not raised: the controller should learn at
        # once that this source is out of the round rather than wait for the deadline.
        fields: dict[str, Any] = {"eligible": False}
        try:
            board = await self.board_at(ctx, poll.version)
            verdict = await self.can_contribute(board, ctx)
            eligible, reason = verdict if isinstance(verdict, tuple) else (verdict, "")
            fields = {"eligible": bool(eligible), "reason": reason}
        except Exception as exc:
            ctx.logger.warning("%s could not judge board %s: %s", self.name, self.board, exc)
            fields["error"] = f"{type(exc).__name__}: {exc}"
        await ctx.publish(
            self.topics["replies"],
            Eligibility(
                board=self.board,
                poll_id=poll.poll_id,
                source=self.name,
                priority=self.priority,
                **fields,
            ),
        )

    async def _on_contribute(self, request: ContributeRequest, ctx: Context) -> Contribution:
        return await self.propose(request, ctx)
