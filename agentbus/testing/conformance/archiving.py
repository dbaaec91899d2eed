"""Conformance checks of what the journal archiver asks of a store: ``journal_mark``,
``drop_run`` and ``list_runs(where=)`` (see :class:`~agentbus.transports.JournalStore`)."""

from __future__ import annotations

import json
from typing import Any

from ...transports import Ack, JournalEntry, RunInfo, Transport
from ...transports.run_query import RunFilter
from ._base import TOPIC, ConformanceBase, entry, kinds, read

__all__ = ["ArchivingChecks"]


def event(event_id: str, type_: str) -> bytes:
    return json.dumps({"specversion": "1.0", "id": event_id, "source": "s", "type": type_}).encode()


def published(run_id: str, event_id: str, type_: str, agent: str) -> JournalEntry:
    """A ``published`` record as a runtime writes it (the event spliced in on write)."""
    record: dict[str, Any] = {
        "kind": "published",
        "time": 1.0,
        "event_id": event_id,
        "type": type_,
        "topic": TOPIC,
        "agent": agent,
    }
    return JournalEntry(run_id, record, event(event_id, type_))


def handled(run_id: str, event_id: str, type_: str, agent: str) -> JournalEntry:
    """A ``handled`` record as a runtime writes it (it names the event's type too)."""
    return entry(
        run_id,
        "handled",
        event_id=event_id,
        type=type_,
        topic=TOPIC,
        agent=agent,
        attempt=1,
        duration_ms=1.0,
    )


async def publish(t: Transport, run_id: str, event_id: str, type_: str, agent: str) -> None:
    """Publish an event with its record (the broker's path: on Redis, via the outbox)."""
    await t.publish(
        TOPIC, event(event_id, type_), records=[published(run_id, event_id, type_, agent)]
    )


def ids(runs: list[RunInfo]) -> list[str]:
    return [r.run_id for r in runs]


class ArchivingChecks(ConformanceBase):
    """Marks, conditional deletion and filtered listing of runs."""

    async def test_journal_mark_changes_with_every_write(self, transport: Transport) -> None:
        store = transport.store
        assert await store.journal_mark("run-none") is None

        await store.save_run(RunInfo("run-k", "marked", started=10.0))
        saved = await store.journal_mark("run-k")
        assert saved is not None
        # Reading changes nothing.
        await store.get_run("run-k")
        await store.read_journal("run-k")
        await store.list_runs(where=RunFilter(agent="nobody"))
        assert await store.journal_mark("run-k") == saved

        await store.write_journal([entry("run-k", "run_started")])
        written = await store.journal_mark("run-k")
        assert written not in (None, saved)

        # Published through the broker: a record and the run's event counter.
        await publish(transport, "run-k", "E1", "order.placed", "shop")
        counted = await store.journal_mark("run-k")
        assert counted not in (None, saved, written)

        # A model call: a record and the run's token counter.
        call = entry("run-k", "model_call", response={"usage": {"input_tokens": 3}})
        await store.write_journal([call])
        tokens = await store.journal_mark("run-k")
        assert tokens not in (None, saved, written, counted)
        run = await store.get_run("run-k")
        assert run is not None
        assert (run.events, run.tokens, run.records) == (1, 3, 3)

        # Metadata alone (no record): a new status, then an end.
        await store.save_run(RunInfo("run-k", "marked", status="completed", started=10.0))
        status = await store.journal_mark("run-k")
        assert status not in (None, saved, written, counted, tokens)
        await store.save_run(
            RunInfo("run-k", "marked", status="completed", started=10.0, ended=11.0)
        )
        ended = await store.journal_mark("run-k")
        assert ended not in (None, saved, written, counted, tokens, status)
        assert await store.journal_mark("run-k") == ended

        # Records of a run never saved are something the store holds.
        await store.write_journal([entry("run-unsaved", "step")])
        assert await store.journal_mark("run-unsaved") is not None

    async def test_drop_run_with_the_current_mark_deletes_the_run(
        self, transport: Transport
    ) -> None:
        store = transport.store
        for run_id, started in (("run-x", 1.0), ("run-y", 2.0)):
            await store.save_run(RunInfo(run_id, "drop", status="completed", started=started))
            await store.write_journal([entry(run_id, "run_started")])
            await publish(transport, run_id, f"E-{run_id}", "order.placed", "shop")
        mark = await store.journal_mark("run-x")
        assert mark is not None

        assert await store.drop_run("run-x", mark=mark) is True

        assert await store.get_run("run-x") is None
        assert await store.read_journal("run-x") == []
        assert await store.journal_mark("run-x") is None
        assert ids(await store.list_runs()) == ["run-y"]
        assert ids(await store.list_runs(where=RunFilter(name="drop"))) == ["run-y"]
        assert ids(await store.list_runs(where=RunFilter(type="order.placed"))) == ["run-y"]
        # The other run is untouched.
        kept = await store.get_run("run-y")
        assert kept is not None
        assert (kept.events, kept.records) == (1, 2)
        assert kinds(await store.read_journal("run-y")) == ["run_started", "published"]

        # Gone already (or never there): nothing to keep, so True.
        assert await store.drop_run("run-x", mark=mark) is True
        assert await store.drop_run("run-never", mark="whatever") is True
        assert await store.journal_mark("run-x") is None

        # A run never saved (records only) is dropped the same way.
        await store.write_journal([entry("run-loose", "step")])
        loose = await store.journal_mark("run-loose")
        assert loose is not None
        assert await store.drop_run("run-loose", mark=loose) is True
        assert await store.read_journal("run-loose") == []
        assert await store.journal_mark("run-loose") is None

    async def test_drop_run_with_a_stale_mark_deletes_nothing(self, transport: Transport) -> None:
        store = transport.store
        await store.save_run(RunInfo("run-s", "stale", status="completed", started=5.0))
        await store.write_journal([entry("run-s", "run_started")])

        async def late(write: Any) -> None:
            """Take a mark, write, then drop with the mark: the run must stay."""
            mark = await store.journal_mark("run-s")
            assert mark is not None
            before = len(await store.read_journal("run-s"))
            await write()
            assert await store.drop_run("run-s", mark=mark) is False
            assert await store.get_run("run-s") is not None
            assert len(await store.read_journal("run-s")) >= before
            assert "run-s" in ids(await store.list_runs())
            assert await store.journal_mark("run-s") not in (None, mark)

        # A record written on its own.
        await late(lambda: store.write_journal([entry("run-s", "step")]))
        # A late event published with its record (Redis: through a topic's outbox and
        # the relay, copied to the run in the background).
        await late(lambda: publish(transport, "run-s", "E-late", "order.placed", "shop"))
        # A late delivery acknowledged with its record (the same path).
        await transport.create_group(TOPIC, "g")
        (d,) = await read(transport, "c1")

        async def ack() -> None:
            await transport.ack(
                [Ack(TOPIC, "g", d.entry_id)],
                records=[handled("run-s", "E-late", "order.placed", "billing")],
            )

        await late(ack)
        # The metadata alone.
        await late(
            lambda: store.save_run(
                RunInfo("run-s", "stale", status="failed", started=5.0, ended=6.0)
            )
        )

        records = await store.read_journal("run-s")
        assert kinds(records) == ["run_started", "step", "published", "handled"]
        run = await store.get_run("run-s")
        assert run is not None
        assert (run.status, run.events, run.records) == ("failed", 1, 4)
        # With the mark it has now, it goes.
        mark = await store.journal_mark("run-s")
        assert mark is not None
        assert await store.drop_run("run-s", mark=mark) is True
        assert await store.get_run("run-s") is None
        assert await store.read_journal("run-s") == []

    async def test_list_runs_where(self, transport: Transport) -> None:
        store = transport.store
        # (run, name, status, started, [(kind, type, agent)])
        runs: list[tuple[str, str, str, float, list[tuple[str, str, str]]]] = [
            ("r1", "checkout", "completed", 100.0, [("published", "order.placed", "shop")]),
            (
                "r2",
                "checkout",
                "failed",
                200.0,
                [
                    ("published", "order.placed", "shop"),
                    ("handled", "order.placed", "billing"),
                    ("published", "payment.failed", "billing"),
                ],
            ),
            # handled names the event's type, but only a published event counts for type
            ("r3", "refund", "completed", 300.0, [("handled", "refund.asked", "billing")]),
            ("r4", "checkout", "completed", 400.0, [("published", "order.placed", "web")]),
            ("r5", "refund", "running", 500.0, []),
        ]
        for run_id, name, status, started, records in runs:
            await store.save_run(RunInfo(run_id, name, status=status, started=started))
            await store.write_journal([entry(run_id, "run_started")])
            for n, (kind, type_, agent) in enumerate(records):
                event_id = f"{run_id}-{n}"
                if kind == "published":
                    await publish(transport, run_id, event_id, type_, agent)
                else:
                    await store.write_journal([handled(run_id, event_id, type_, agent)])

        async def listed(limit: int = 100, **where: Any) -> list[str]:
            return ids(await store.list_runs(limit=limit, where=RunFilter(**where)))

        assert await listed() == ["r5", "r4", "r3", "r2", "r1"]  # empty: as without where
        assert ids(await store.list_runs(where=None)) == ["r5", "r4", "r3", "r2", "r1"]
        assert await listed(name="checkout") == ["r4", "r2", "r1"]
        assert await listed(name="nothing") == []
        assert await listed(status="completed") == ["r4", "r3", "r1"]
        assert await listed(name="refund", status="completed") == ["r3"]
        assert await listed(since=200.0) == ["r5", "r4", "r3", "r2"]  # since <= started
        assert await listed(until=300.0) == ["r2", "r1"]  # started < until
        assert await listed(since=200.0, until=400.0) == ["r3", "r2"]
        assert await listed(agent="billing") == ["r3", "r2"]  # published or handled
        assert await listed(agent="shop") == ["r2", "r1"]
        assert await listed(agent="nobody") == []
        assert await listed(type="order.placed") == ["r4", "r2", "r1"]
        assert await listed(type="payment.failed") == ["r2"]
        assert await listed(type="refund.asked") == []  # handled only, never published
        assert await listed(agent="billing", type="order.placed") == ["r2"]
        assert await listed(agent="shop", type="order.placed", status="completed") == ["r1"]
        assert await listed(type="order.placed", since=150.0, until=450.0) == ["r4", "r2"]
        # newest first, limit respected
        assert await listed(limit=2, type="order.placed") == ["r4", "r2"]
        assert await listed(limit=1, name="checkout") == ["r4"]
        assert await listed(limit=2, since=0.0) == ["r5", "r4"]
        assert await listed(limit=0, name="checkout") == []
        # the filtered runs carry their counters like the unfiltered list
        (r2,) = await store.list_runs(where=RunFilter(type="payment.failed"))
        assert (r2.name, r2.status, r2.started, r2.events, r2.records) == (
            "checkout",
            "failed",
            200.0,
            2,
            4,
        )
