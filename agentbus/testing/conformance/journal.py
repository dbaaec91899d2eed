"""Conformance checks of the :class:`~agentbus.transports.JournalStore` role."""

from __future__ import annotations

import json

from ...transports import Ack, JournalEntry, RunInfo, Transport
from ._base import TOPIC, entry, group_info, kinds, letter, publish_n, read
from .archiving import ArchivingChecks
from .budget import BudgetChecks
from .questions import QuestionChecks

__all__ = ["JournalChecks"]


class JournalChecks(ArchivingChecks, BudgetChecks, QuestionChecks):
    """Runs, records (alone and written with publishes, acks, dead letters), counters;
    and what the archiver needs (:class:`ArchivingChecks`: marks, conditional deletion,
    filtered listing); budget spend (:class:`BudgetChecks`); questions to people
    (:class:`QuestionChecks`)."""

    async def test_journal_runs_and_records(self, transport: Transport) -> None:
        await transport.store.save_run(RunInfo("run-a", "first", started=100.0, meta={"k": "v"}))
        await transport.store.save_run(RunInfo("run-b", "second", started=200.0))
        await transport.store.write_journal(
            [entry("run-a", "run_started"), entry("run-b", "run_started")]
        )
        event = b'{"specversion":"1.0","id":"E1","source":"s","type":"t"}'
        await transport.publish(
            TOPIC, event, records=[JournalEntry("run-a", {"kind": "published", "n": 1}, event)]
        )
        await transport.publish_many(
            [(TOPIC, event), (TOPIC, event)],
            records=[
                JournalEntry("run-a", {"kind": "published", "n": 2}, event),
                JournalEntry("run-a", {"kind": "published", "n": 3}, event),
                entry("run-b", "step", step="x"),
            ],
        )
        await transport.store.write_journal([entry("run-a", "handled", duration_ms=1.5)])

        records = await transport.store.read_journal("run-a")
        assert kinds(records) == ["run_started", "published", "published", "published", "handled"]
        assert [r.record.get("n") for r in records[1:4]] == [1, 2, 3]
        assert records[1].record["event"] == json.loads(event)
        assert all(r.run_id == "run-a" for r in records)
        assert records[-1].record["duration_ms"] == 1.5
        assert kinds(await transport.store.read_journal("run-b")) == ["run_started", "step"]
        assert await transport.store.read_journal("run-none") == []

        run_a = await transport.store.get_run("run-a")
        assert run_a is not None
        assert (run_a.name, run_a.status, run_a.started, run_a.ended) == (
            "first",
            "running",
            100.0,
            None,
        )
        assert (run_a.events, run_a.records, run_a.meta) == (3, 5, {"k": "v"})
        assert await transport.store.get_run("run-none") is None

        runs = await transport.store.list_runs()
        assert [r.run_id for r in runs] == ["run-b", "run-a"]
        assert [r.events for r in runs] == [0, 3]
        assert [r.run_id for r in await transport.store.list_runs(limit=1)] == ["run-b"]

        # Updating a run's metadata keeps its counters.
        await transport.store.save_run(
            RunInfo(
                "run-a", "first", status="completed", started=100.0, ended=101.5, meta={"k": "v"}
            )
        )
        done = await transport.store.get_run("run-a")
        assert done is not None
        assert (done.status, done.ended, done.duration, done.events, done.records) == (
            "completed",
            101.5,
            1.5,
            3,
            5,
        )

    async def test_events_counted_before_the_run_is_saved(self, transport: Transport) -> None:
        # A worker may journal into a run before (or without) its metadata being saved.
        event = b'{"specversion":"1.0","id":"E1","source":"s","type":"t"}'
        await transport.publish(
            TOPIC, event, records=[JournalEntry("run-late", {"kind": "published"}, event)]
        )
        await transport.store.write_journal([entry("run-quiet", "step")])

        early = await transport.store.get_run("run-late")
        assert early is not None
        assert (early.name, early.status, early.events, early.records) == ("", "unknown", 1, 1)
        assert await transport.store.get_run("run-quiet") is None
        assert await transport.store.list_runs() == []

        await transport.store.save_run(
            RunInfo("run-late", "late", status="completed", started=5.0, ended=6.0)
        )
        await transport.store.save_run(RunInfo("run-late", "late", status="completed", started=5.0))
        saved = await transport.store.get_run("run-late")
        assert saved is not None
        assert (saved.name, saved.status, saved.events, saved.ended) == (
            "late",
            "completed",
            1,
            6.0,
        )
        assert [r.run_id for r in await transport.store.list_runs()] == ["run-late"]

    async def test_ack_with_journal_and_mark(self, transport: Transport) -> None:
        keys = transport.keys
        await transport.store.save_run(RunInfo("run-m", "marks", started=1.0))
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 1)
        (d,) = await read(transport, "c1")
        marker = keys.dedup(TOPIC, "worker", "E1")

        assert not await transport.is_marked(marker)
        await transport.ack(
            [Ack(TOPIC, "g", d.entry_id)],
            records=[entry("run-m", "handled")],
            mark=[(marker, 60)],
        )

        assert await transport.is_marked(marker)
        assert not await transport.is_marked(keys.dedup(TOPIC, "worker", "E2"))
        assert (await group_info(transport, "g")).pending == 0
        assert kinds(await transport.store.read_journal("run-m")) == ["handled"]

    async def test_dead_letter_writes_journal(self, transport: Transport) -> None:
        await transport.store.save_run(RunInfo("run-d", "dlq", started=1.0))
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 1)
        (d,) = await read(transport, "c1")

        await transport.dead_letter(
            TOPIC, "g", d.entry_id, letter(d.entry_id), records=[entry("run-d", "dead_lettered")]
        )

        assert kinds(await transport.store.read_journal("run-d")) == ["dead_lettered"]
