"""Blackboard: knowledge sources build a solution on a shared, event-sourced board.

::

    controller = BlackboardController(
        "incident", sources=["log-analyst", "fixer"], goal=lambda b: b.has("fix")
    )
    app = App("war-room", [controller, LogAnalyst, Fixer])

    @app.main
    async def main(run: Run) -> BoardOutcome:
        job = SolveBoard(problem={"alert": "..."})
        return await run.request(controller.topic, job, expect=BoardOutcome, timeout=300)

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

from ..common import SequencedView, StaleView
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
    board_topics,
    rebuild_board,
)
from ._choosers import Chooser, by_priority, model_chooser, ranked
from ._controller import BlackboardController
from ._controller import solve as solve  # deprecated: kept importable, not listed
from ._session import BoardSettings, Goal
from ._source import KnowledgeSource, Verdict

__all__ = [
    "BlackboardController",
    "BoardClosed",
    "BoardEntry",
    "BoardOutcome",
    "BoardPoll",
    "BoardSettings",
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
]
