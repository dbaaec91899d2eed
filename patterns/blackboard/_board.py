"""The blackboard's events and its state, which is nothing but the fold of its entries.

Every accepted write is a :class:`BoardEntry` event on the board's topic
(``blackboard.<board>.entries``), numbered by ``version`` from 1. :class:`BoardState`
folds them: replaying a run's entries (:func:`rebuild_board`) gives back exactly the
board the controller had.

Entries with the same ``kind`` and ``key`` form one item: a later entry replaces the
earlier one in the current view (a hypothesis first ``proposed``, later ``rejected``),
while the history keeps both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentbus import Journal, Message

__all__ = [
    "BoardClosed",
    "BoardEntry",
    "BoardOutcome",
    "BoardPoll",
    "BoardState",
    "ContributeRequest",
    "Contribution",
    "Draft",
    "Eligibility",
    "Ending",
    "RoundRecord",
    "SolveBoard",
    "board_topics",
    "rebuild_board",
]

Ending = Literal["goal", "quiescent", "round_limit"]


class Draft(BaseModel):
    """What a knowledge source wants written: an entry without its version.

    ``key`` names the item the entry updates (default: a new item per entry).
    """

    model_config = ConfigDict(extra="forbid")

    kind: str
    """What sort of entry (``finding``, ``hypothesis``...): the board is queried by it."""
    data: dict[str, Any] = Field(default_factory=dict)
    """The entry's content."""
    key: str | None = None
    """The item this entry updates; ``None`` makes a new item."""


class BoardEntry(Message, type="blackboard.Entry"):
    """One accepted write: board ``version`` after applying it, by ``author`` in ``round``."""

    board: str
    version: int
    kind: str
    key: str
    data: dict[str, Any] = Field(default_factory=dict)
    author: str
    round: int


class SolveBoard(Message, type="blackboard.Solve"):
    """Ask a board's controller to work on ``problem`` (written as the first entry).

    Send it as a request to the controller's ``topic``; the answer is a
    :class:`BoardOutcome`. ``seed`` entries are written after the problem.
    """

    board: str = ""
    """The board's name; empty means the board of the controller it is sent to."""
    problem: dict[str, Any] = Field(default_factory=dict)
    """What to solve; written as the board's first entry (kind ``problem``)."""
    seed: list[Draft] = Field(default_factory=list)
    """Entries to write after the problem, before the first round."""


class BoardPoll(Message, type="blackboard.Poll"):
    """Broadcast each round: "the board is at ``version``; who can contribute?"."""

    board: str
    poll_id: str
    round: int
    version: int


class Eligibility(Message, type="blackboard.Eligibility"):
    """A source's answer to a poll (``error`` set when deciding failed)."""

    board: str
    poll_id: str
    source: str
    eligible: bool
    priority: int = 0
    reason: str = ""
    error: str | None = None


class ContributeRequest(Message, type="blackboard.Contribute"):
    """The controller's request to the chosen source: contribute to board ``version``."""

    board: str
    round: int
    version: int


class Contribution(Message, type="blackboard.Contribution"):
    """A source's proposed writes, valid only while the board is at ``expected_version``."""

    board: str
    source: str
    expected_version: int
    drafts: list[Draft] = Field(default_factory=list)


class BoardClosed(Message, type="blackboard.Closed"):
    """Published on the board's topic when the controller stops, with why."""

    board: str
    ending: Ending
    reason: str
    rounds: int
    version: int


class RoundRecord(BaseModel):
    """What happened in one round (for the outcome and the trace)."""

    model_config = ConfigDict(extra="forbid")

    round: int
    """The round's number, from 1."""
    eligible: list[str]
    """Sources that said they could contribute."""
    silent: list[str] = Field(default_factory=list)
    """Sources that did not answer the poll in time."""
    chosen: str | None = None
    """The source asked to contribute, if any."""
    result: Literal["applied", "conflict", "failed", "empty", "quiescent"]
    """``applied``, ``conflict`` (stale write), ``failed``, ``empty`` (nothing written) or ``quiescent``.
    """
    version: int
    """The board's version after the round."""
    detail: str = ""
    """An error or conflict explanation."""


class BoardOutcome(Message, type="blackboard.Outcome"):
    """The controller's reply: how the board ended, and the board itself."""

    board: str
    """The board's name."""
    ending: Ending
    """``goal``, ``quiescent`` or ``round_limit``."""
    reason: str
    """Why it ended, in words."""
    rounds: int
    """Rounds played."""
    version: int
    """The board's final version (the number of entries)."""
    entries: list[BoardEntry]
    """Every entry, in version order (fold them with :meth:`state`)."""
    history: list[RoundRecord]
    """One :class:`RoundRecord` per round."""
    conflicts: int = 0
    """Contributions rejected because the board had moved on."""
    failed_sources: list[str] = Field(default_factory=list)
    """Sources left out after ``max_source_failures`` failures."""

    def state(self) -> BoardState:
        """The final board as a :class:`BoardState`."""
        return BoardState.fold(self.board, self.entries)


@dataclass(frozen=True)
class BoardState:
    """The board at one version: the fold of entries 1..version.

    ``history`` holds every entry; ``current`` only the latest of each (kind, key).
    """

    board: str
    history: tuple[BoardEntry, ...] = ()
    current: dict[tuple[str, str], BoardEntry] = field(default_factory=dict)

    @property
    def version(self) -> int:
        """How many entries the board holds (0 when empty)."""
        return len(self.history)

    def apply(self, entry: BoardEntry) -> BoardState:
        """The board with ``entry`` applied.

        Raises :class:`ValueError` when ``entry`` is for another board or is not the
        next version (entries are applied strictly in order).
        """
        if entry.board != self.board or entry.version != self.version + 1:
            raise ValueError(
                f"entry {entry.board!r} v{entry.version} does not follow board "
                f"{self.board!r} at v{self.version}"
            )
        current = dict(self.current)
        current[(entry.kind, entry.key)] = entry
        return BoardState(self.board, (*self.history, entry), current)

    @classmethod
    def fold(cls, board: str, entries: Iterable[BoardEntry]) -> BoardState:
        """Fold ``entries`` (any order; only this board's) into a state.

        Raises :class:`ValueError` when versions are missing or repeated.
        """
        state = cls(board)
        for entry in sorted((e for e in entries if e.board == board), key=lambda e: e.version):
            state = state.apply(entry)
        return state

    def items(self, kind: str | None = None) -> list[BoardEntry]:
        """Current items (of ``kind``), oldest first."""
        found = [e for e in self.current.values() if kind is None or e.kind == kind]
        return sorted(found, key=lambda e: e.version)

    def latest(self, kind: str) -> BoardEntry | None:
        """The most recently written current item of ``kind``."""
        found = self.items(kind)
        return found[-1] if found else None

    def has(self, kind: str, **match: Any) -> bool:
        """Whether a current item of ``kind`` has all ``match`` values in its data."""
        return any(all(e.data.get(k) == v for k, v in match.items()) for e in self.items(kind))


def board_topics(board: str) -> dict[str, str]:
    """The topics of ``board``: entries, poll, replies, control, and the source prefix."""
    base = f"blackboard.{board}"
    return {
        "entries": f"{base}.entries",
        "poll": f"{base}.poll",
        "replies": f"{base}.replies",
        "control": f"{base}.control",
        "source": f"{base}.source.",
    }


async def rebuild_board(journal: Journal, run_id: str, board: str) -> BoardState:
    """Rebuild ``board`` as it was at the end of run ``run_id`` from its journal.

    Raises :class:`ValueError` when the journal's entries do not fold (a gap).
    """
    topic = board_topics(board)["entries"]
    entries = [
        BoardEntry.model_validate(env.data or {})
        for env in await journal.events(run_id)
        if env.topic == topic and env.type == BoardEntry.message_type
    ]
    return BoardState.fold(board, entries)
