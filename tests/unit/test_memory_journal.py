"""The embedded transport's journal outlives the process (SQLite), so runs can be inspected."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbus import Agent, Context, Journal, MemoryTransport, Message, Runtime, handle
from agentbus.transports import JournalEntry, RunInfo
from agentbus.transports.sqlite_journal import SqliteJournal


class Hello(Message, type="unit.journal.Hello"):
    name: str


class Greeter(Agent, name="greeter"):
    @handle("unit.hello")
    async def greet(self, msg: Hello, ctx: Context) -> Hello:
        return Hello(name=f"hello {msg.name}")


async def test_journal_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "journal.sqlite3"
    first = MemoryTransport(journal_path=path)
    await first.store.save_run(RunInfo("r1", "persisted", started=10.0))
    await first.publish(
        "unit.t", b"{}", records=[JournalEntry("r1", {"kind": "published", "event_id": "e1"})]
    )
    await first.store.write_journal([JournalEntry("r1", {"kind": "step", "step": "s"})])
    await first.aclose()  # commits what the flush timer has not yet written

    second = MemoryTransport(journal_path=path)
    try:
        (run,) = await second.store.list_runs()
        assert (run.run_id, run.name, run.events, run.records) == ("r1", "persisted", 1, 2)
        assert [r.kind for r in await second.store.read_journal("r1")] == ["published", "step"]
        assert await second.admin.topics() == []  # topics are in memory only
    finally:
        await second.aclose()


async def test_a_runtime_run_can_be_read_after_exit(tmp_path: Path) -> None:
    url = f"memory://?journal={tmp_path / 'j.sqlite3'}"
    async with Runtime(url, block_ms=100) as rt:
        rt.add(Greeter())
        async with rt.run("greeting") as run:
            reply = await run.request("unit.hello", Hello(name="ada"), timeout=5)
        await rt.idle()
    assert reply == Hello(name="hello ada")

    async with Journal.open(url) as journal:
        info = await journal.run(run.run_id[:10])  # a unique prefix is enough
        kinds = [r.kind for r in await journal.records(run.run_id)]
        events = await journal.events(run.run_id)

    assert (info.name, info.status, info.events) == ("greeting", "completed", 2)
    assert kinds[0] == "run_started"
    assert kinds[-1] == "run_finished"
    assert {"published", "delivered", "replied", "handled"} <= set(kinds)
    assert [e.type for e in events] == ["unit.journal.Hello", "unit.journal.Hello"]


def test_in_memory_sqlite_journal() -> None:
    journal = SqliteJournal(None)
    journal.save_run(RunInfo("r", "n", started=1.0))
    journal.append([JournalEntry("r", {"kind": "published"}, b'{"id":"e"}')])

    (record,) = journal.read("r")
    assert record.record == {"kind": "published", "event": {"id": "e"}}
    run = journal.get_run("r")
    assert run is not None
    assert (run.events, run.records) == (1, 1)
    journal.close()


def test_a_journal_written_one_row_per_record_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,
            started REAL NOT NULL, ended REAL, events INTEGER NOT NULL DEFAULT 0,
            records INTEGER NOT NULL DEFAULT 0, meta TEXT NOT NULL DEFAULT '{}');
        CREATE TABLE records (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
            body TEXT NOT NULL);
        INSERT INTO runs (run_id, name, status, started, events) VALUES ('r', 'old', 'completed', 1, 1);
        INSERT INTO records (run_id, body) VALUES ('r', '{"kind":"run_started"}');
        INSERT INTO records (run_id, body) VALUES ('other', '{"kind":"step"}');
        INSERT INTO records (run_id, body) VALUES ('r', '{"kind":"published","event_id":"e"}');
        """
    )
    db.commit()
    db.close()

    journal = SqliteJournal(path)
    journal.append([JournalEntry("r", {"kind": "run_finished"})])
    assert [r.kind for r in journal.read("r")] == ["run_started", "published", "run_finished"]
    run = journal.get_run("r")
    assert run is not None
    assert (run.name, run.events, run.records, run.tokens) == ("old", 1, 3, 0)
    journal.close()


def test_records_keep_their_order_across_runs_and_batches() -> None:
    journal = SqliteJournal(None)
    for batch in range(3):
        journal.append(
            [
                JournalEntry(run, {"kind": "step", "n": batch * 10 + i})
                for i in range(4)
                for run in ("a", "b")
            ]
        )
    for run in ("a", "b"):
        records = journal.read(run)
        assert [r.record["n"] for r in records] == [b * 10 + i for b in range(3) for i in range(4)]
        assert len({r.seq for r in records}) == 12
    journal.close()


def test_a_chunk_is_the_records_with_their_events_spliced_in() -> None:
    import json

    from agentbus.transports.chunks import _MARK, encode_chunk

    event = b'{"id":"e1","data":{"text":"caf\xc3\xa9 \\u0000 \\"quoted\\""}}'
    entries = [
        JournalEntry("r", {"kind": "delivered", "n": 1}),
        JournalEntry("r", {"kind": "published", "n": 2}, raw_event=event),
        JournalEntry("r", {"kind": "step", "text": "looks like a mark: \x00agentbus-event-"}),
        JournalEntry("r", {"kind": "published", "n": 3}, raw_event=b'{"id":"e2"}'),
    ]
    chunk = encode_chunk(entries)
    assert json.loads(chunk) == [json.loads(e.encode()) for e in entries]
    assert chunk == b"[" + b",".join(e.encode() for e in entries) + b"]"
    # a record that happens to carry the exact mark still encodes correctly (slow path)
    sneaky = [*entries, JournalEntry("r", {"kind": "step", "text": _MARK})]
    assert json.loads(encode_chunk(sneaky)) == [json.loads(e.encode()) for e in sneaky]
    assert encode_chunk([JournalEntry("r", {"kind": "step"})]) == b'[{"kind":"step"}]'


async def test_the_journal_file_is_opened_only_when_first_needed(tmp_path: Path) -> None:
    path = tmp_path / "lazy" / "journal.sqlite3"
    Runtime(f"memory://?journal={path}")  # built, never started: nothing to close
    transport = MemoryTransport(journal_path=path)
    await transport.publish("unit.t", b"{}")
    assert not path.exists()
    await transport.store.write_journal([JournalEntry("r", {"kind": "step"})])
    await transport.store.list_runs()  # a read drains the queued records into the file
    assert path.exists()
    await transport.aclose()


def test_a_drop_sees_what_another_process_wrote_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    archiver, writer = SqliteJournal(path), SqliteJournal(path)
    archiver.save_run(RunInfo("r", "shared", status="completed", started=1.0))
    archiver.flush()
    mark = archiver.mark("r")
    assert mark is not None
    assert writer.mark("r") == mark

    writer.append([JournalEntry("r", {"kind": "step"})])  # a late record, committed
    writer.flush()
    assert archiver.drop("r", mark) is False
    assert [r.kind for r in archiver.read("r")] == ["step"]

    now = archiver.mark("r")
    assert now is not None
    assert now != mark
    assert archiver.drop("r", now) is True
    assert writer.get_run("r") is None
    assert writer.read("r") == []
    assert writer.mark("r") is None
    archiver.close()
    writer.close()


async def test_a_filtered_list_looks_further_back_when_too_few_runs_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentbus.transports import run_query
    from agentbus.transports.run_query import RunFilter

    monkeypatch.setattr(run_query, "FIRST_SCAN", 2)  # widen after 2, 16, ... runs
    t = MemoryTransport()
    for n in range(40):
        agent = "old" if n < 3 else "new"
        await t.store.save_run(RunInfo(f"r{n:02}", "n", status="completed", started=float(n)))
        await t.store.write_journal([JournalEntry(f"r{n:02}", {"kind": "step", "agent": agent})])
    journal = t.store._db  # type: ignore[attr-defined]
    assert [r.run_id for r in journal.newest(2)[0]] == ["r39", "r38"]
    assert journal.newest(2)[1] is True
    assert journal.newest(40)[1] is False

    by_agent = await t.store.list_runs(where=RunFilter(agent="old"))
    assert [r.run_id for r in by_agent] == ["r02", "r01", "r00"]
    by_agent = await t.store.list_runs(limit=2, where=RunFilter(agent="old", until=2.0))
    assert [r.run_id for r in by_agent] == ["r01", "r00"]
    await t.aclose()
