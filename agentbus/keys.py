"""Every storage key name agentbus uses, built in one place.

All keys live under one prefix (default ``agentbus:``), so several systems can share a
Redis and an ACL can restrict a user to ``~agentbus:*``.

Why the braces: on a Redis Cluster, a key's hash slot is computed from the part between
its first ``{`` and the next ``}`` (its *hash tag*) when there is one, and a script or
``MULTI`` may only touch keys of one slot. Keys are therefore tagged by their owner, so
that what must change together shares a slot and what is independent spreads over the
cluster's masters:

- by **topic** ``{T}``: the stream, its dead letters, its outbox, its de-dup markers,
  the markers of relayed events and its partition bookkeeping;
- by **run** ``{R}``: the journal stream and the run's hash (metadata and counters);
- the run index is split in :data:`RUN_INDEX_BUCKETS` sorted sets, each its own slot,
  so no single key is written by every run;
- presence (a few writes per runtime per minute) shares one tag, ``{presence}``;
- a run's questions to people live with the run (``{R}``); their indexes (what is
  waiting, what is due to wake up, per agent) share one tag, ``{questions}``.

A single Redis ignores the tags: it is a cluster of one slot owner, with the same keys.
A prefix that holds a tag itself (``{app}:``) puts every key in that one slot (Redis
hashes the first tag): one shard, the trade BullMQ documents, available if wanted.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from .errors import UsageError

__all__ = ["DEFAULT_PREFIX", "RUN_INDEX_BUCKETS", "Keys"]

DEFAULT_PREFIX = "agentbus:"

#: How many sorted sets index runs (by start time); a run is in ``run_bucket(run_id)``.
RUN_INDEX_BUCKETS = 16


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under ``prefix``."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise UsageError(
                f"the key prefix must be non-empty without spaces, got {self.prefix!r}"
            )

    # -- per topic: tag {T} ------------------------------------------------------------------
    def topic(self, name: str) -> str:
        """The stream that carries topic ``name``."""
        return f"{self.prefix}topic:{{{name}}}"

    def topic_name(self, key: str) -> str:
        """Inverse of :meth:`topic`."""
        return key.removeprefix(f"{self.prefix}topic:{{").removesuffix("}")

    def topic_pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for every topic stream (the prefix taken literally)."""
        return f"{glob_escape(self.prefix)}topic:{{*}}"

    def dead_letters(self, topic: str) -> str:
        """The dead-letter stream of ``topic``."""
        return f"{self.prefix}dlq:{{{topic}}}"

    def outbox(self, topic: str) -> str:
        """The stream of journal records (and relayed events) written with ``topic``'s
        entries in one atomic step, waiting to be copied where they belong."""
        return f"{self.prefix}outbox:{{{topic}}}"

    def outbox_pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for every outbox stream."""
        return f"{glob_escape(self.prefix)}outbox:{{*}}"

    def outbox_topic(self, key: str) -> str:
        """Inverse of :meth:`outbox`."""
        return key.removeprefix(f"{self.prefix}outbox:{{").removesuffix("}")

    def relayed(self, topic: str, event_id: str) -> str:
        """The marker that event ``event_id`` was relayed onto ``topic`` (exactly once)."""
        return f"{self.prefix}relayed:{{{topic}}}:{event_id}"

    def dedup(self, topic: str, agent: str, event_id: str) -> str:
        """The marker that ``agent`` has handled ``event_id``, read from ``topic``."""
        return f"{self.prefix}dedup:{{{topic}}}:{agent}:{event_id}"

    def partitions(self, topic: str) -> str:
        """The string holding how many partitions ``topic`` was declared with."""
        return f"{self.prefix}partitions:{{{topic}}}"

    def members(self, topic: str, group: str) -> str:
        """The hash of consumers of ``group`` sharing ``topic``'s partitions (with expiry)."""
        return f"{self.prefix}members:{{{topic}}}:{group}"

    def lease(self, stream: str, group: str) -> str:
        """Which consumer of ``group`` owns partition stream ``stream`` (a topic name)."""
        return f"{self.prefix}lease:{{{stream}}}:{group}"

    # -- per run: tag {R} ----------------------------------------------------------------------
    def journal(self, run_id: str) -> str:
        """The journal stream of one run."""
        return f"{self.prefix}journal:{{{run_id}}}"

    def journal_pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for every journal stream."""
        return f"{glob_escape(self.prefix)}journal:{{*}}"

    def journal_run(self, key: str) -> str:
        """Inverse of :meth:`journal`: the run id."""
        return key.removeprefix(f"{self.prefix}journal:{{").removesuffix("}")

    def run(self, run_id: str) -> str:
        """The hash holding one run's metadata and counters (events, tokens, records)."""
        return f"{self.prefix}run:{{{run_id}}}"

    def questions(self, run_id: str) -> str:
        """The hash of one run's questions to people (``ctx.ask_human``)."""
        return f"{self.prefix}questions:{{{run_id}}}"

    # -- the question indexes: one tag ---------------------------------------------------------
    def question_index(self) -> str:
        """Sorted set of every question not resumed yet (``"<run> <question>"`` by when
        asked): what ``agentbus pending`` lists."""
        return f"{self.prefix}question-index:{{questions}}"

    def question_due(self, agent: str) -> str:
        """Sorted set of ``agent``'s questions by when their wake-up is due (the deadline
        while open; at once when answered)."""
        return f"{self.prefix}question-due:{{questions}}:{agent}"

    # -- the run index: RUN_INDEX_BUCKETS slots --------------------------------------------
    def runs(self, bucket: int) -> str:
        """Sorted set ``bucket`` of the run index (run id scored by start time)."""
        return f"{self.prefix}runs:{{runs.{bucket}}}"

    def run_bucket(self, run_id: str) -> int:
        """The index bucket of ``run_id`` (stable across processes and versions)."""
        return zlib.crc32(run_id.encode()) % RUN_INDEX_BUCKETS

    def run_index(self, run_id: str) -> str:
        """The index sorted set that holds ``run_id``."""
        return self.runs(self.run_bucket(run_id))

    # -- presence: one tag ----------------------------------------------------------------------
    def presence(self, consumer: str) -> str:
        """The hash in which runtime ``consumer`` announces itself and what it owns."""
        return f"{self.prefix}presence:{{presence}}:{consumer}"

    def presences(self) -> str:
        """The set of consumers with a presence record (written on start and stop only)."""
        return f"{self.prefix}presences:{{presence}}"


def glob_escape(text: str) -> str:
    """``text`` matched literally in a ``SCAN MATCH`` pattern (a prefix may hold ``*?[]``)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


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
