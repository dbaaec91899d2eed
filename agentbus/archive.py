"""The archiver: moves finished runs from the hot journal store to a journal archive.

A hot store (Redis, or the embedded SQLite) keeps live and recent runs; a
:class:`~agentbus.transports.contract.JournalArchive` (PostgreSQL) keeps history.
:func:`archive_runs` makes one pass: every run that is finished (its status is not
``running``) and has been quiet for ``older_than`` seconds is copied whole into the
archive and then deleted from the hot store. :func:`run_archiver` repeats passes in the
background (``agentbus worker``).

One run is archived in four steps::

    mark = store.journal_mark(run)          # a token that changes on any write to it
    run, records = store.get_run(), store.read_journal()
    archive.store_run(run, chunks, summary, checksum)      # one transaction: commit
    archive.stored_digest(run) == (len(records), checksum) # what the database holds
    store.drop_run(run, mark=mark)          # delete, only if nothing was written since

Why nothing is lost and nothing doubled, wherever the archiver is killed (SIGKILL, a
lost connection, a crash):

* Before the archive commits, the run is only in the hot store: the archive writes a
  run in one transaction (``store_run``), so a kill before the commit leaves no row of
  it there (or leaves the earlier complete copy of a pass that did not get to delete).
* After the commit and before the hot copy is deleted, the run is in both places, and
  complete in both: the archive's copy is the exact records read. The next pass finds it
  again in the hot store (still finished and old), reads it, and ``store_run`` replaces
  the archived copy with an identical one (a run is one row and its chunks, keyed by run
  id: replaced, never added a second time); then it verifies and deletes as below.
* The hot copy is deleted only after the archive's own count and SHA-256 of what it
  holds (computed by the database from the stored chunks, not echoed from what was
  sent) equal those of the records read. A corrupted or partial copy keeps the run hot
  (reported as ``digest mismatch``) and the next pass writes it again.
* The delete is conditional on the mark taken *before* reading: a record (or a metadata
  update) written to the run meanwhile - a late event from a handler still running -
  changes the mark and ``drop_run`` refuses, atomically. The run stays hot with the new
  record; the next pass archives it again, replacing the copy that lacks it.
* ``drop_run`` deletes the metadata, counters, journal and index entry in one step, so
  the hot side is never half deleted either; and a run already gone counts as deleted,
  so two archivers racing on one run both succeed, storing identical copies.

So at every instant each run is either only in the hot store, or complete in both, or
only (complete, verified) in the archive - never half in either.

Which runs are candidates: the hot store lists runs newest first, so the archiver asks
for runs *started* before the cutoff (``RunFilter(until=now - older_than)``, which a
store may answer from its start-time index) up to :data:`HOT_SCAN_LIMIT` of them, then
keeps those that are finished and whose end (or start, when no end was recorded) is also
before the cutoff. A run that ended before the cutoff necessarily started before it, so
the filter loses none; listing with no filter would need the whole hot store to reach
the old runs behind the new ones. Runs are archived oldest first, so a pass cut short
(``limit``, a crash) has freed the oldest. A run whose records are newer than the
cutoff (late events after its end) waits for a later pass, as ``prune_runs`` would.

What this does not cover: a record written to a run *after* it was deleted from the hot
store (an event later than ``older_than`` after the run's end) starts a journal without
metadata there, which no listing shows and the archiver never picks up. Readers
(:class:`~agentbus.transports.tiered.TieredReader`) show those records after the
archived ones until the hot store's ``prune_runs`` removes them, as it does for a pruned
run; the archived copy stays the run as it stood when archived.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import TransportClosed
from .transports.archive_format import archive_chunks, digest, summarize
from .transports.base import RunInfo
from .transports.contract import JournalArchive, JournalStore
from .transports.run_query import HOT_SCAN_LIMIT, RunFilter

__all__ = ["ArchiveReport", "archive_runs", "run_archiver"]

log = logging.getLogger("agentbus.archive")

#: Why a candidate was left in the hot store (``ArchiveReport.skipped`` values).
RUNNING = "running"
GONE = "gone"
CHANGED = "changed while archiving"
MISMATCH = "digest mismatch"
RECENT = "recent records"


@dataclass(slots=True)
class ArchiveReport:
    """What one archiving pass did."""

    #: Runs now in the archive and deleted from the hot store, in the order archived.
    archived: list[str] = field(default_factory=list)
    #: Candidates left in the hot store, with why (``running``, ``changed while
    #: archiving``, ``digest mismatch``, ``recent records``, ``gone``).
    skipped: dict[str, str] = field(default_factory=dict)
    #: Records archived (of the runs in :attr:`archived`).
    records: int = 0
    #: Encoded bytes archived (the chunk bodies).
    bytes: int = 0
    #: Wall-clock duration of the pass.
    seconds: float = 0.0

    @property
    def records_per_second(self) -> float:
        """Archived records over the pass's duration (0 for an empty or instant pass)."""
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "archived": list(self.archived),
            "skipped": dict(self.skipped),
            "records": self.records,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "records_per_second": self.records_per_second,
        }


def _last_activity(run: RunInfo) -> float:
    return run.ended if run.ended is not None else run.started


async def _candidates(store: JournalStore, cutoff: float) -> list[RunInfo]:
    """Finished runs quiet since before ``cutoff``, oldest first."""
    listed = await store.list_runs(limit=HOT_SCAN_LIMIT, where=RunFilter(until=cutoff))
    old = [r for r in listed if r.status != RUNNING and _last_activity(r) < cutoff]
    old.sort(key=lambda r: (_last_activity(r), r.run_id))
    return old


@dataclass(slots=True)
class _Outcome:
    run_id: str
    skipped: str | None = None
    records: int = 0
    bytes: int = 0


async def _archive_one(
    store: JournalStore, archive: JournalArchive, run_id: str, cutoff: float
) -> _Outcome:
    # The mark first: anything written after it (even before our reads) changes it, so
    # drop_run below cannot delete a record the archive did not get.
    mark = await store.journal_mark(run_id)
    if mark is None:
        return _Outcome(run_id, GONE)  # archived (and dropped) by another archiver
    run = await store.get_run(run_id)
    if run is None:
        return _Outcome(run_id, GONE)
    if run.status == RUNNING:
        return _Outcome(run_id, RUNNING)
    records = await store.read_journal(run_id)
    if records and max(r.time for r in records) >= cutoff:
        return _Outcome(run_id, RECENT)  # late events after its end: let them settle
    chunks = archive_chunks(records)
    checksum = digest(c.body for c in chunks)
    await archive.store_run(run, chunks, summarize(records), checksum)
    stored = await archive.stored_digest(run_id)
    if stored != (len(records), checksum):
        log.warning(
            "run %s: the archive holds %s, expected %d records with digest %s; kept hot",
            run_id,
            stored,
            len(records),
            checksum,
        )
        return _Outcome(run_id, MISMATCH)
    if not await store.drop_run(run_id, mark=mark):
        return _Outcome(run_id, CHANGED)  # next pass stores it again, with the new record
    return _Outcome(run_id, None, len(records), sum(len(c.body) for c in chunks))


async def archive_runs(
    store: JournalStore,
    archive: JournalArchive,
    *,
    older_than: float,
    batch: int = 100,
    now: float | None = None,
    limit: int | None = None,
) -> ArchiveReport:
    """Move every finished run quiet for over ``older_than`` seconds to ``archive``.

    A run is a candidate when its status is not ``running`` and its end (or its start,
    when it has no end) is more than ``older_than`` seconds before ``now`` (default: the
    current time). Candidates are archived oldest first, ``batch`` at a time
    concurrently, at most ``limit`` of them (``None``: all). Each is written to the
    archive in one transaction, verified by the archive's own count and digest, and only
    then deleted from ``store`` - unless something was written to it meanwhile (see the
    module docstring: idempotent, and safe to kill at any point).

    A run that fails with an error is reported in ``skipped`` (``error: ...``) and left
    hot; when every run of a batch fails (the store or the database is away) the pass
    stops and raises the first error. Runs archived before stay archived; the failing
    ones stay hot (or in both, complete, until the next pass).
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch!r}")
    started = time.perf_counter()
    cutoff = (time.time() if now is None else now) - older_than
    report = ArchiveReport()
    candidates = await _candidates(store, cutoff)
    if limit is not None:
        candidates = candidates[:limit]
    for start in range(0, len(candidates), batch):
        part = candidates[start : start + batch]
        # Records this process wrote but its store still copies in the background (the
        # Redis outbox) are then readable; anything later changes the mark anyway.
        await store.settle()
        outcomes = await asyncio.gather(
            *(_archive_one(store, archive, r.run_id, cutoff) for r in part),
            return_exceptions=True,
        )
        errors: list[BaseException] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancelled: stop now (every run is whole somewhere)
                errors.append(outcome)
            elif outcome.skipped is not None:
                report.skipped[outcome.run_id] = outcome.skipped
            else:
                report.archived.append(outcome.run_id)
                report.records += outcome.records
                report.bytes += outcome.bytes
        if errors and len(errors) == len(part):
            # Nothing of the batch went through: the store or the database is away, and
            # every further run would fail the same way.
            report.seconds = time.perf_counter() - started
            log.warning("archiving stopped after %d runs: %s", len(report.archived), errors[0])
            raise errors[0]
        for r, outcome in zip(part, outcomes, strict=True):
            if isinstance(outcome, Exception):
                # One run failing (a poison run) must not hold up the others behind it.
                report.skipped[r.run_id] = f"error: {type(outcome).__name__}: {outcome}"
                log.warning("run %s not archived: %s", r.run_id, outcome)
    report.seconds = time.perf_counter() - started
    return report


async def run_archiver(
    store: JournalStore,
    archive: JournalArchive,
    *,
    older_than: float,
    every: float,
    stop: asyncio.Event | None = None,
    on_report: Callable[[ArchiveReport], Awaitable[None] | None] | None = None,
    batch: int = 100,
) -> None:
    """Archive runs every ``every`` seconds until ``stop`` is set (or the task is
    cancelled): the background archiver of ``agentbus worker``.

    The first pass runs at once. Each report is logged (and given to ``on_report``); a
    pass that fails is logged and the next one comes ``every`` seconds later - a failed
    pass leaves nothing half done (see the module docstring). Returns when the store or
    the archive is closed (``TransportClosed``).
    """
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            report = await archive_runs(store, archive, older_than=older_than, batch=batch)
        except TransportClosed:
            return  # the worker is shutting down: its store (or archive) went first
        except Exception:
            log.exception("archiving pass failed; retrying in %gs", every)
        else:
            if report.archived or report.skipped:
                log.info(
                    "archived %d runs (%d records, %d bytes) in %.2fs, %.0f records/s; "
                    "kept %d hot: %s",
                    len(report.archived),
                    report.records,
                    report.bytes,
                    report.seconds,
                    report.records_per_second,
                    len(report.skipped),
                    report.skipped,
                )
            else:
                log.debug("archiving pass: nothing to archive")
            if on_report is not None:
                result = on_report(report)
                if inspect.isawaitable(result):
                    await result
        try:
            async with asyncio.timeout(every):
                await stop.wait()
        except TimeoutError:
            pass
