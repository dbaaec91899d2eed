"""Reading runs from two tiers at once: the hot store, then the journal archive.

The archiver (:mod:`agentbus.archive`) moves finished runs from the hot store (Redis,
the embedded SQLite) to a :class:`~.contract.JournalArchive` (PostgreSQL). A reader
should not have to know where a run is now, so :class:`TieredReader` answers every
read from the hot store first and the archive second:

- A run is looked up hot first. Between the archive's commit and the hot copy's
  deletion a run is complete in both; the two copies are the same records, and the hot
  one is the one a late record would go to, so hot wins.
- A listing asks both for ``limit`` runs meeting the filter (each answers it its own
  way: the archive with its indexes), drops the archive's copy of a run listed hot,
  and keeps the newest ``limit``.
"""

from __future__ import annotations

from .archive_format import RunSummary, summarize
from .base import JournalRecord, RunInfo
from .contract import JournalArchive, JournalStore
from .run_query import RunFilter

__all__ = ["TieredReader"]


class TieredReader:
    """Runs and records from ``hot`` first, then from ``archive`` (``None``: hot only)."""

    def __init__(self, hot: JournalStore, archive: JournalArchive | None = None) -> None:
        self.hot = hot
        self.archive = archive

    async def get_run(self, run_id: str) -> RunInfo | None:
        """The run's metadata from whichever tier holds it, or ``None``."""
        found = await self.hot.get_run(run_id)
        if self.archive is not None and (found is None or _unsaved(found)):
            archived = await self.archive.get_run(run_id)
            if archived is not None:
                return archived
        return found

    async def where(self, run_id: str) -> str | None:
        """``"hot"`` or ``"archive"``: the tier the run's metadata is read from
        (``None``: neither)."""
        found = await self.hot.get_run(run_id)
        if found is not None and not _unsaved(found):
            return "hot"
        if self.archive is not None and await self.archive.get_run(run_id) is not None:
            return "archive"
        return None if found is None else "hot"

    async def read_journal(self, run_id: str) -> list[JournalRecord]:
        """The run's records from the tier that holds its metadata.

        A record that reached an archived run after its hot copy was deleted (late work
        of a finished run) starts a journal without metadata in the hot store; such
        records follow the archived ones, as they were written after them.
        """
        hot = await self.hot.get_run(run_id)
        if self.archive is None or (hot is not None and not _unsaved(hot)):
            return await self.hot.read_journal(run_id)
        archived = await self.archive.read_journal(run_id)
        # A run deleted hot between the two calls is in the archive by then (the
        # archiver deletes only what it stored); the hot read after it finds the late
        # records (an empty journal read when there are none).
        return archived + await self.hot.read_journal(run_id)

    async def list_runs(self, *, limit: int = 100, where: RunFilter | None = None) -> list[RunInfo]:
        """The newest ``limit`` runs of both tiers meeting ``where``."""
        runs = await self.hot.list_runs(limit=limit, where=where)
        if self.archive is None:
            return runs
        seen = {r.run_id for r in runs}
        runs += [
            r
            for r in await self.archive.list_runs(limit=limit, where=where)
            if r.run_id not in seen
        ]
        runs.sort(key=lambda r: r.started, reverse=True)
        return runs[:limit]

    async def find_runs(self, prefix: str, *, limit: int = 10) -> list[str]:
        """Ids of runs in either tier starting with ``prefix`` (at most ``limit``)."""
        ids = [
            r.run_id for r in await self.hot.list_runs(limit=10_000) if r.run_id.startswith(prefix)
        ][:limit]
        if self.archive is not None and len(ids) < limit:
            ids += [i for i in await self.archive.find_runs(prefix, limit=limit) if i not in ids]
        return ids[:limit]

    async def summary(self, run_id: str) -> RunSummary:
        """Agents, event types and tokens per model of the run.

        The archive stored it with the run; a hot run's is computed from its records.
        """
        if self.archive is not None and await self.where(run_id) == "archive":
            late = await self.hot.read_journal(run_id)
            stored = await self.archive.summary(run_id)
            if stored is not None and not late:
                return stored
        return summarize(await self.read_journal(run_id))


def _unsaved(run: RunInfo) -> bool:
    """A hot run without metadata: only records, written after its metadata was deleted
    (by the archiver, or before the run was saved)."""
    return run.status == "unknown" and not run.started
