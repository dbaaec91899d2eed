"""The transport contract: three roles, composed.

A transport stores topics as append-only streams with consumer groups, pending lists,
delivery counts, claiming and dead-letter streams (the Redis Streams model), and keeps
the journal of every run. Its methods fall into three roles, each a protocol:

* :class:`Broker` — what a runtime calls while it hosts agents: publish, read, ack,
  commit, claim, dead-letter. The hot path; a :class:`Transport` *is* its broker.
* :class:`JournalStore` — runs and their records (``transport.store``).
* :class:`Admin` — what operators and maintenance call: topic listings, dead-letter
  handling, retention, runtime presence, bulk deletion (``transport.admin``).

:class:`Transport` composes them: a broker with ``store``, ``admin``, ``keys`` (its key
names) and a lifecycle. An implementation may be one object playing every role
(``store`` and ``admin`` returning ``self``) or separate objects sharing a connection,
as :class:`~agentbus.transports.memory.MemoryTransport` and
:class:`~agentbus.transports.redis.RedisStreamsTransport` are. Both pass the same
conformance suite, :mod:`agentbus.testing.conformance`, which checks any transport.

Unless noted, every method raises :class:`~agentbus.errors.TransportClosed` after
``aclose()`` and :class:`~agentbus.errors.TransportUnavailable` when the store cannot
be reached. Cancelling a blocking read leaves the transport usable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .base import (
    Ack,
    DeadConsumer,
    DeadLetter,
    Delivery,
    EntryState,
    JournalEntry,
    JournalRecord,
    Question,
    Reservation,
    RunInfo,
    TopicInfo,
)
from .run_query import RunFilter

if TYPE_CHECKING:
    from ..keys import Keys
    from ..signing import Signer
    from .archive_format import ArchiveChunk, RunSummary

__all__ = ["Admin", "Broker", "JournalArchive", "JournalStore", "Transport"]


@runtime_checkable
class Broker(Protocol):
    """Topics, consumer groups and deliveries: what a hosting runtime calls.

    Methods that take ``journal`` entries write them atomically with the change they
    record (see :class:`JournalStore` for how they are stored).
    """

    async def publish(
        self, topic: str, payload: bytes, *, records: Sequence[JournalEntry] = ()
    ) -> str:
        """Append an event; the journal entries are written atomically with it."""

    async def publish_many(
        self, items: Sequence[tuple[str, bytes]], *, records: Sequence[JournalEntry] = ()
    ) -> list[str]:
        """Append several events (and journal entries) in one round trip."""

    async def create_group(self, topic: str, group: str, *, from_start: bool = True) -> None:
        """Create ``group`` on ``topic`` (and the topic) if missing.

        ``from_start`` delivers entries already in the topic; otherwise only new ones.
        """

    async def delete_group(self, topic: str, group: str) -> None:
        """Remove a consumer group and its pending list (a broadcast subscription's end)."""

    async def read_group(
        self,
        group: str,
        consumer: str,
        topics: Sequence[str],
        *,
        count: int,
        block_ms: int | None,
        pending: bool = False,
    ) -> list[Delivery]:
        """Read up to ``count`` entries per topic for ``consumer``.

        With ``pending`` it returns the consumer's own unacknowledged entries (counting
        a new delivery) instead of new ones and never blocks. ``block_ms=None`` does
        not block; otherwise it waits up to that long for new entries. Raises
        :class:`~agentbus.errors.GroupNotFound` when a topic lacks the group.
        """

    async def ack(
        self,
        acks: Sequence[Ack],
        *,
        records: Sequence[JournalEntry] = (),
        mark: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Acknowledge entries, append journal entries and set de-duplication markers
        (``(key, ttl_seconds)``), all in one atomic round trip."""

    async def commit(
        self,
        ack: Ack,
        mark: tuple[str, int],
        *,
        publish: Sequence[tuple[str, bytes]] = (),
        records: Sequence[JournalEntry] = (),
    ) -> bool:
        """Finish a de-duplicated delivery atomically (exactly-once effects).

        Unless the de-duplication marker ``mark`` (``(key, ttl_seconds)``) exists,
        append the events ``publish`` (``(topic, payload)``) and the ``journal``
        entries and set the marker; acknowledge the entry either way, all or nothing.
        Returns ``False`` when the marker existed (someone already committed this
        event: nothing was written but the ack). Safe to retry after a failure.
        """

    async def is_marked(self, key: str) -> bool:
        """Whether a de-duplication marker set through :meth:`ack` exists."""

    async def claim_idle(
        self,
        topic: str,
        group: str,
        consumer: str,
        *,
        min_idle_ms: int,
        count: int,
        cursor: str = "0-0",
    ) -> tuple[str, list[Delivery]]:
        """Take over entries pending longer than ``min_idle_ms`` from any consumer.

        Returns the cursor to continue from (``"0-0"`` when the scan wrapped around).
        """

    async def extend_lease(
        self, topic: str, group: str, consumer: str, entry_ids: Sequence[str]
    ) -> None:
        """Reset the idle time of entries ``consumer`` is still working on."""

    async def dead_letter(
        self,
        topic: str,
        group: str,
        entry_id: str,
        letter: dict[str, Any],
        *,
        records: Sequence[JournalEntry] = (),
    ) -> None:
        """Move an entry to the topic's dead-letter stream and ack it, atomically."""

    def reads_in_flight(self, group: str, consumer: str) -> set[str]:
        """The topics a read of ``consumer`` in ``group`` still waits on although
        :meth:`read_group` returned: what such a read brings comes with a later
        ``read_group`` call, whichever topics that call names. Empty for a transport
        whose reads end with the call. (A partition is given up only once no read of
        it is left.)"""

    async def read_tail(
        self, topic: str, after: str, *, count: int, block_ms: int | None
    ) -> list[Delivery]:
        """Read entries after ``after`` without a group (for reply inboxes)."""

    async def delete_topic(self, topic: str) -> None:
        """Delete a topic with its groups (a reply inbox once its request is over)."""

    async def entry_state(self, topic: str, entry_id: str) -> list[EntryState]:
        """Where entry ``entry_id`` of ``topic`` stands in each of the topic's groups
        (empty when the topic has none). Not on the hot path: requests ask it when a reply
        is late."""

    # -- partitions: counts, members and leases (see agentbus.partitions) ----------------
    async def declare_partitions(self, topic: str, count: int) -> int:
        """Store that ``topic`` has ``count`` partitions unless a count is stored already;
        return the stored count (the caller refuses a different one)."""

    async def partition_count(self, topic: str) -> int | None:
        """How many partitions ``topic`` was declared with (``None``: not partitioned)."""

    async def heartbeat_member(
        self, topic: str, group: str, member: str, *, ttl_ms: int
    ) -> list[str]:
        """Record that ``member`` of ``group`` shares ``topic``'s partitions for the next
        ``ttl_ms``; forget members whose time ran out. Returns the live members, sorted.
        Time is the store's (one clock for every process)."""

    async def remove_member(self, topic: str, group: str, member: str) -> None:
        """Forget ``member`` at once (a clean stop)."""

    async def acquire_leases(
        self, group: str, member: str, streams: Sequence[str], *, ttl_ms: int
    ) -> list[bool]:
        """For each partition stream, take its lease for ``member`` if no one holds it, or
        extend it by ``ttl_ms`` if ``member`` holds it; ``True`` where ``member`` holds it
        now, ``False`` where another does. Each lease is checked and set atomically."""

    async def release_lease(self, stream: str, group: str, member: str) -> bool:
        """Delete the lease of ``stream`` if ``member`` holds it (compare and delete);
        ``True`` when it did."""


@runtime_checkable
class JournalStore(Protocol):
    """Runs and their journal records (a transport's ``store``)."""

    #: Signs every journal record written, through this store or with a broker call
    #: (set by a :class:`~agentbus.Runtime` with a signer; ``None``: unsigned).
    signer: Signer | None

    async def save_run(self, run: RunInfo) -> None:
        """Create or update a run's metadata (not its counters)."""

    async def write_journal(self, records: Sequence[JournalEntry]) -> None:
        """Append journal entries on their own."""

    async def list_runs(self, *, limit: int = 100, where: RunFilter | None = None) -> list[RunInfo]:
        """Recorded runs, newest first; only those meeting ``where`` when given."""

    async def get_run(self, run_id: str) -> RunInfo | None:
        """One run's metadata, or ``None``."""

    async def read_journal(self, run_id: str) -> list[JournalRecord]:
        """A run's journal records in the order they were written."""

    async def prune_runs(self, *, before: float) -> list[str]:
        """Delete every run in which nothing was recorded since ``before`` (Unix time).

        A run's last activity is the latest of its start, its end and its last journal
        record; a pruned run loses its metadata, journal and counters. Returns the ids.
        """

    async def relay_pending(self, *, older_than: float) -> int:
        """Finish journal writes a crashed writer left half done; returns how many.

        A store that cannot write a topic and a run's journal in one atomic step (Redis
        Cluster) writes records next to the topic first and copies them to the run
        right after; this copies again what has waited over ``older_than`` seconds
        (a writer that crashed in between). Safe to run from many processes at once.
        Stores that write records in one step return 0.
        """

    async def journal_mark(self, run_id: str) -> str | None:
        """A token that changes whenever anything is written to ``run_id`` (its journal
        or its metadata); ``None`` when the store holds nothing of it.

        The archiver reads a run, stores it elsewhere, then deletes it with
        :meth:`drop_run` only if the mark it took before reading still holds: a record
        written in between (a late event) keeps the run here for the next pass.
        """

    async def drop_run(self, run_id: str, *, mark: str) -> bool:
        """Delete the run (metadata, counters, journal, index entry) if its
        :meth:`journal_mark` is still ``mark``, atomically; ``True`` when deleted (or
        already gone), ``False`` when something was written since."""

    async def reserve(
        self, run_id: str, amounts: Mapping[str, float], limits: Mapping[str, float]
    ) -> Reservation:
        """Add ``amounts`` to the run's spend counters if, for every counter named in
        ``limits``, the counter is under its limit and the amount fits
        (:func:`~agentbus.transports.base.fits`); all or nothing, atomically across
        every process using the store. Counters start at 0.

        ``limits`` empty adds unconditionally (settling a call's actual tokens and
        cost); ``amounts`` empty only reads. ``spent`` answers the counters named in
        either. A run's budget (:class:`~agentbus.Budget`) pays with this; runs
        without one never call it."""

    # -- questions to people (ctx.ask_human): see docs/durability.md ---------------------
    async def open_question(self, question: Question) -> tuple[Question, bool]:
        """Store ``question`` unless one with its run and id exists; returns the stored
        one and whether this call created it. Visible to :meth:`list_questions` and,
        once due, to :meth:`claim_questions` of every process using the store."""

    async def get_question(self, run_id: str, question_id: str) -> Question | None:
        """One question as stored (any status), or ``None``."""

    async def list_questions(self, *, run_id: str | None = None) -> list[Question]:
        """The open questions (of ``run_id`` only, when given), oldest first. An index
        entry whose question is gone is removed, not reported."""

    async def answer_question(
        self, run_id: str, question_id: str, answer: Any, *, by: str, now: float
    ) -> tuple[bool, Question | None]:
        """Answer a question if it is still open and its deadline (if any) is after
        ``now``, atomically: of concurrent answers one wins. Returns whether this call
        answered it and the question after the call (``None``: unknown); an open
        question past its deadline becomes ``timed_out``. An answered question is due
        for :meth:`claim_questions` at once."""

    async def withdraw_questions(self, run_id: str, *, by: str, now: float) -> list[Question]:
        """Withdraw every open question of ``run_id`` (its run was cancelled); returns
        them. They are listed no more and cannot be answered."""

    async def claim_questions(
        self, agents: Sequence[str], *, now: float, grace: float, limit: int = 100
    ) -> list[Question]:
        """Claim the wake-ups due for ``agents``: questions answered, or open past their
        deadline (which become ``timed_out`` here), not resumed yet and not claimed in
        the last ``grace`` seconds; sets their ``claimed`` to ``now``. Of concurrent
        callers, one claims each. A claimer that dies before :meth:`resumed_question`
        leaves the wake-up to be claimed again after ``grace``."""

    async def resumed_question(self, question: Question) -> bool:
        """Record that the claimed ``question``'s wake-up was re-published (done: it is
        claimed no more); ``False`` when another claim took it over since."""

    async def settle(self) -> None:
        """Wait until the records of every write made so far through this store's
        transport can be read (``read_journal``, and counted by ``get_run``).

        A store that copies records to their runs in the background (Redis: from the
        topics' outboxes) waits for the copies queued so far; its own reads settle
        first, so this matters to code that reads another way (or in another process,
        which may see a write's records a few milliseconds late). Others return at once.
        """


@runtime_checkable
class JournalArchive(Protocol):
    """Where finished runs go to outlive the hot store: a database made for history.

    Written a whole run at a time by the archiver (:mod:`agentbus.archive`), read like a
    :class:`JournalStore`. An implementation checks at :meth:`connect` that its schema is
    current and raises :class:`~agentbus.errors.UsageError` naming the upgrade command
    when it is behind; :meth:`upgrade` applies the missing migrations.
    """

    #: Where it is (passwords masked when shown: :func:`redact_url`).
    url: str

    async def connect(self) -> None:
        """Open the connection pool and check the schema version."""

    async def aclose(self) -> None:
        """Close the pool. Idempotent."""

    async def upgrade(self) -> list[int]:
        """Apply the migrations not applied yet, in order, each in its own transaction;
        returns the versions applied (``[]`` when current). Safe to run concurrently."""

    async def store_run(
        self, run: RunInfo, chunks: Sequence[ArchiveChunk], summary: RunSummary, checksum: str
    ) -> None:
        """Write a run whole, replacing any earlier copy of it, in one transaction.

        ``chunks`` are its records encoded by
        :func:`~agentbus.transports.archive_format.archive_chunks`, ``checksum`` their
        :func:`~agentbus.transports.archive_format.digest`.
        """

    async def stored_digest(self, run_id: str) -> tuple[int, str] | None:
        """(record count, checksum) as the database computes them from the chunks it
        holds; ``None`` when the run is not archived."""

    async def get_run(self, run_id: str) -> RunInfo | None:
        """An archived run's metadata and counters, or ``None``."""

    async def read_journal(self, run_id: str) -> list[JournalRecord]:
        """An archived run's records, in journal order (``[]`` when not archived)."""

    async def list_runs(self, *, limit: int = 100, where: RunFilter | None = None) -> list[RunInfo]:
        """Archived runs, newest first, meeting ``where`` (answered by indexes)."""

    async def summary(self, run_id: str) -> RunSummary | None:
        """What the archive computed of the run when it stored it."""

    async def find_runs(self, prefix: str, *, limit: int = 10) -> list[str]:
        """Ids of archived runs starting with ``prefix``."""

    async def prune_runs(self, *, before: float) -> list[str]:
        """Delete archived runs that ended (or started, if they never ended) before
        ``before``; returns their ids."""


@runtime_checkable
class Admin(Protocol):
    """Inspection, dead-letter handling, retention, presence and deletion (a transport's
    ``admin``).

    Presence (``announce``, ``heartbeat``, ``withdraw``, ``prune_dead_consumers``) is
    retention's: a runtime's maintenance announces what it owns only so that, once it
    stops announcing, another process can delete it.
    """

    async def topics(self) -> list[TopicInfo]:
        """Every topic with its groups, pending counts, lag and dead-letter count."""

    async def dead_letters(self, topic: str, *, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead letters of ``topic``."""

    async def remove_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> int:
        """Delete the given dead letters (all when ``ids`` is ``None``); returns how many."""

    async def retry_dead_letter(
        self, topic: str, letter_id: str, *, records: Sequence[JournalEntry] = ()
    ) -> str | None:
        """Re-publish the event dead letter ``letter_id`` holds and delete the letter.

        The letter's payload goes back to ``topic`` unchanged (the same bytes as the
        entry that was dead-lettered), together with ``journal``, atomically. Returns
        the new entry id, or ``None`` when the letter no longer exists (someone else
        retried or purged it): nothing is written then.
        """

    async def trim_acknowledged(self, topic: str, *, consumed: str | None = None) -> int:
        """Delete the entries of ``topic`` that no consumer group still needs.

        An entry is kept while any group has it pending or has not had it delivered
        yet; everything older than the oldest such entry, over all groups, is deleted.
        Consistent with concurrent reads, acks and publishes (nothing a group has not
        acknowledged is ever deleted). A topic without groups is left alone, unless
        ``consumed`` gives the entry id up to which its only reader (a reply inbox read
        without a group) has read. Returns how many entries were deleted.
        """

    async def remove_idle_consumers(self, topic: str, group: str, *, idle_ms: int) -> list[str]:
        """Remove the consumers of ``group`` idle longer than ``idle_ms`` with nothing pending.

        A consumer is idle since its last read, claim or lease renewal. One with pending
        entries is never removed (its entries would be lost to the group); a removed
        consumer that reads again is simply re-created. Returns the removed names.
        """

    # -- presence: what a runtime owns, pruned when it stops announcing itself ------------
    async def announce(
        self,
        consumer: str,
        *,
        groups: Sequence[tuple[str, str]],
        inbox: str | None,
        every_ms: int,
    ) -> None:
        """Record that runtime ``consumer`` is alive now and owns the broadcast ``groups``
        (``(topic, group)``) and the reply ``inbox``, and will say so every ``every_ms``.

        Replaces what it announced before. Its own record, not a key shared by all
        runtimes, is what a heartbeat touches.
        """

    async def heartbeat(self, consumer: str) -> bool:
        """Record that ``consumer`` is alive now; ``False`` when it has no record (never
        announced, or pruned as dead): the caller announces itself again then."""

    async def withdraw(self, consumer: str) -> None:
        """Forget ``consumer`` (on a clean stop, after it removed what it owned)."""

    async def prune_dead_consumers(
        self, *, idle_ms: int, dry_run: bool = False
    ) -> list[DeadConsumer]:
        """Delete what runtimes not seen for ``idle_ms`` owned: their broadcast groups
        (with their pending lists) and reply inboxes, then their records.

        A runtime counts as dead only when it has not been seen for ``idle_ms`` and for
        three of its own announcement periods, whichever is longer, so a short
        ``idle_ms`` cannot remove a live runtime's groups. The check and the deletion are
        one step: a heartbeat in between keeps everything. ``dry_run`` lists them and
        deletes nothing. Returns the dead runtimes, oldest first.
        """

    async def delete_prefix(self) -> int:
        """Delete everything this transport stores under its key prefix: topics, dead
        letters, markers, presence records, runs and journals (a replay's scratch
        namespace, tests). Returns how many keys (or, in memory, topics, presence
        records and runs) went."""


@runtime_checkable
class Transport(Broker, Protocol):
    """A broker with its journal store and administration. See the module docstring."""

    #: The URL it was opened with, with any password removed.
    url: str

    @property
    def keys(self) -> Keys:
        """Its key names (the prefix every key it writes lives under)."""

    @property
    def store(self) -> JournalStore:
        """Runs and journals (possibly the transport itself)."""

    @property
    def admin(self) -> Admin:
        """Topic listings, dead letters, retention, deletion (possibly the transport)."""

    async def connect(self) -> None:
        """Check the store answers. Raises ``TransportUnavailable`` naming the URL."""

    async def aclose(self) -> None:
        """Release connections (of every role). Idempotent."""
