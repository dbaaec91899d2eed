"""Every storage key name agentbus uses, built in one place.

All keys live under one prefix (default ``agentbus:``), so several systems can share a
Redis and an ACL can restrict a user to ``~agentbus:*``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

__all__ = ["DEFAULT_PREFIX", "Keys"]

DEFAULT_PREFIX = "agentbus:"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under ``prefix``."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise UsageError(
                f"the key prefix must be non-empty without spaces, got {self.prefix!r}"
            )

    def topic(self, name: str) -> str:
        """The stream that carries topic ``name``."""
        return f"{self.prefix}topic:{name}"

    def topic_name(self, key: str) -> str:
        """Inverse of :meth:`topic`."""
        return key.removeprefix(f"{self.prefix}topic:")

    def topic_pattern(self) -> str:
        return f"{self.prefix}topic:*"

    def dead_letters(self, topic: str) -> str:
        """The dead-letter stream of ``topic``."""
        return f"{self.prefix}dlq:{topic}"

    def journal(self, run_id: str) -> str:
        """The journal stream of one run."""
        return f"{self.prefix}journal:{run_id}"

    def run(self, run_id: str) -> str:
        """The hash holding one run's metadata."""
        return f"{self.prefix}run:{run_id}"

    def journal_counts(self) -> str:
        """The hash counting each run's journal records (field: the run id)."""
        return f"{self.prefix}journal-counts"

    def runs(self) -> str:
        """The sorted set indexing runs by start time."""
        return f"{self.prefix}runs"

    def presence(self, consumer: str) -> str:
        """The hash in which runtime ``consumer`` announces itself and what it owns."""
        return f"{self.prefix}presence:{consumer}"

    def presences(self) -> str:
        """The set of consumers with a presence record (written on start and stop only)."""
        return f"{self.prefix}presences"

    def dedup(self, agent: str, event_id: str) -> str:
        """The marker that ``agent`` has handled ``event_id``."""
        return f"{self.prefix}dedup:{agent}:{event_id}"


def validate_topic(name: str) -> str:
    """Return ``name`` if it is a usable topic name, else raise :class:`UsageError`."""
    if name in _VALID:  # every publish checks its topic; most systems use a handful
        return name
    if not isinstance(name, str) or not name or any(c.isspace() for c in name) or "*" in name:
        raise UsageError(f"topic names must be non-empty, without spaces or '*', got {name!r}")
    if len(_VALID) < 10_000:
        _VALID.add(name)
    return name


_VALID: set[str] = set()
