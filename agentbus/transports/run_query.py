"""Which runs to list: :class:`RunFilter`, and its evaluation on a hot store.

A journal archive answers a filter with its indexes (PostgreSQL: see
:mod:`.postgres_archive`). A hot store (Redis, the embedded SQLite) holds the live and
recent runs only, so it lists them and filters here, reading a candidate's journal
only for what its metadata cannot answer (agent, event type).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .base import JournalRecord, RunInfo

__all__ = ["HOT_SCAN_LIMIT", "RunFilter", "filter_runs", "scan_filtered"]

#: Runs a hot store lists at most to filter them (it holds the recent ones only).
HOT_SCAN_LIMIT = 100_000
#: Runs :func:`scan_filtered` looks at first (widened when too few of them match).
FIRST_SCAN = 1_000


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Conditions on runs, all of which must hold (``None``: any).

    ``since``/``until`` bound the start time (Unix seconds, ``since <= started <
    until``); ``agent`` matches a run in which that agent published, handled or called
    anything; ``type`` a run in which an event of that type was published.
    """

    name: str | None = None
    status: str | None = None
    since: float | None = None
    until: float | None = None
    agent: str | None = None
    type: str | None = None

    @property
    def empty(self) -> bool:
        """No condition at all."""
        return all(
            v is None
            for v in (self.name, self.status, self.since, self.until, self.agent, self.type)
        )

    @property
    def needs_records(self) -> bool:
        """Whether the records decide (agent or type), not the run's metadata alone."""
        return self.agent is not None or self.type is not None

    def matches_info(self, run: RunInfo) -> bool:
        """Whether the run's metadata meets the conditions on name, status and time."""
        if self.name is not None and run.name != self.name:
            return False
        if self.status is not None and run.status != self.status:
            return False
        if self.since is not None and run.started < self.since:
            return False
        return not (self.until is not None and run.started >= self.until)

    def matches_records(self, records: list[JournalRecord]) -> bool:
        """Whether the run's records meet the conditions on agent and type."""
        agent_ok = self.agent is None
        type_ok = self.type is None
        for r in records:
            rec = r.record
            if not agent_ok and rec.get("agent") == self.agent:
                agent_ok = True
            if not type_ok and rec.get("kind") == "published" and rec.get("type") == self.type:
                type_ok = True
            if agent_ok and type_ok:
                return True
        return agent_ok and type_ok


async def filter_runs(
    runs: list[RunInfo],
    where: RunFilter | None,
    read: Callable[[str], Awaitable[list[JournalRecord]]],
    *,
    limit: int,
) -> list[RunInfo]:
    """The first ``limit`` of ``runs`` (newest first) that meet ``where``."""
    if where is None or where.empty:
        return runs[:limit]
    out: list[RunInfo] = []
    for run in runs:
        if len(out) >= limit:
            break
        if not where.matches_info(run):
            continue
        if where.needs_records and not where.matches_records(await read(run.run_id)):
            continue
        out.append(run)
    return out


async def scan_filtered(
    newest: Callable[[int], Awaitable[tuple[list[RunInfo], bool]]],
    where: RunFilter,
    read: Callable[[str], Awaitable[list[JournalRecord]]],
    *,
    limit: int,
) -> list[RunInfo]:
    """:func:`filter_runs` over a hot store's newest runs, looking no further than needed.

    ``newest(n)`` gives the ``n`` runs started last, newest first (a store may already
    leave out those failing ``where``'s conditions on metadata), and whether it holds
    more. The first :data:`FIRST_SCAN` are filtered, then eight times as many, and so
    on until ``limit`` match or :data:`HOT_SCAN_LIMIT` runs were looked at; a run's
    journal is read at most once.
    """
    if limit <= 0:
        return []
    journals: dict[str, list[JournalRecord]] = {}

    async def read_once(run_id: str) -> list[JournalRecord]:
        if run_id not in journals:
            journals[run_id] = await read(run_id)
        return journals[run_id]

    scan = min(max(limit, FIRST_SCAN), HOT_SCAN_LIMIT)
    while True:
        runs, more = await newest(scan)
        found = await filter_runs(runs, where, read_once, limit=limit)
        if len(found) >= limit or not more or scan >= HOT_SCAN_LIMIT:
            return found
        scan = min(scan * 8, HOT_SCAN_LIMIT)
