"""Behaviour of the embedded (SQLite) journal beyond the shared contract."""

from __future__ import annotations

import time

from agentbus import MemoryTransport
from agentbus.transports import JournalEntry


def note(run_id: str, kind: str) -> JournalEntry:
    return JournalEntry(run_id, {"kind": kind, "time": time.time()})


async def test_embedded_journal_prunes_records_of_runs_never_saved() -> None:
    t = MemoryTransport()  # journal in memory; the same SQLite code as the file
    await t.store.write_journal([JournalEntry("orphans", {"kind": "ignored", "time": 1.0})])
    await t.store.write_journal([note("fresh-orphans", "ignored")])

    assert await t.store.prune_runs(before=time.time() - 60) == ["orphans"]

    assert await t.store.read_journal("orphans") == []
    assert [r.kind for r in await t.store.read_journal("fresh-orphans")] == ["ignored"]
    await t.aclose()
