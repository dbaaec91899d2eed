"""The PostgreSQL journal archive on a real PostgreSQL (the ``archive_url`` fixture: a
schema of the test's own, dropped afterwards; under CI=true a missing server fails)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import re
import time
from typing import Any

import asyncpg
import pytest

from agentbus.errors import TransportClosed, TransportUnavailable, UsageError
from agentbus.transports.archive_format import (
    archive_chunks,
    digest,
    summarize,
)
from agentbus.transports.base import JournalRecord, RunInfo
from agentbus.transports.contract import JournalArchive
from agentbus.transports.postgres_archive import (
    PostgresArchive,
    find_runs_sql,
    list_runs_sql,
    parse_postgres_url,
)
from agentbus.transports.postgres_schema import LATEST, current_version
from agentbus.transports.run_query import RunFilter

T0 = 1_700_000_000.0


def make_records(
    run_id: str,
    n: int,
    *,
    agents: tuple[str, ...] = ("planner", "worker"),
    types: tuple[str, ...] = ("task.created",),
    model: str = "gpt-test",
) -> list[JournalRecord]:
    """``n`` records shaped like a real journal's: published, delivered/handled, model
    calls with token usage, with unicode and nested data in the events."""
    out: list[JournalRecord] = [
        JournalRecord(
            seq=f"{int(T0 * 1000)}-0",
            run_id=run_id,
            record={"kind": "run_started", "time": T0, "name": "demo", "meta": {}},
        )
    ]
    i = 1
    while len(out) < n:
        agent = agents[i % len(agents)]
        type_ = types[i % len(types)]
        event_id = f"ev-{i:06d}"
        t = T0 + i / 1000
        kind = ("published", "handled", "model_call")[i % 3]
        rec: dict[str, Any]
        if kind == "published":
            rec = {
                "kind": "published",
                "time": t,
                "event_id": event_id,
                "type": type_,
                "topic": "tasks",
                "agent": agent,
                "event": {
                    "specversion": "1.0",
                    "id": event_id,
                    "type": type_,
                    "source": agent,
                    "data": {
                        "text": 'naïve café ☕ 日本語 \U0001f680 "quoted" \\ back',
                        "nested": {"list": [1, 2.5, None, True, {"deep": ["x", {"y": []}]}]},
                        "n": i,
                    },
                },
            }
        elif kind == "handled":
            rec = {
                "kind": "handled",
                "time": t,
                "event_id": event_id,
                "type": type_,
                "topic": "tasks",
                "agent": agent,
                "consumer": f"{agent}-1",
                "attempt": 1,
                "duration_ms": 1.25,
            }
        else:
            rec = {
                "kind": "model_call",
                "time": t,
                "name": "llm",
                "agent": agent,
                "event_id": event_id,
                "call_index": 0,
                "request": {"model": model, "messages": [{"role": "user", "content": "hi ✓"}]},
                "duration_ms": 120.5,
                "substituted": False,
                "response": {
                    "text": "hello",
                    "usage": {"input_tokens": 10 + i % 7, "output_tokens": 3},
                },
            }
        out.append(JournalRecord(seq=f"{int(t * 1000)}-{i}", run_id=run_id, record=rec))
        i += 1
    return out[:n]


async def store(
    archive: PostgresArchive,
    run_id: str,
    *,
    n: int = 10,
    name: str = "demo",
    status: str = "completed",
    started: float = T0,
    ended: float | None = None,
    meta: dict[str, Any] | None = None,
    chunk_size: int = 4,
    **kw: Any,
) -> tuple[RunInfo, list[JournalRecord]]:
    records = make_records(run_id, n, **kw)
    tokens = sum(
        r.record["response"]["usage"]["input_tokens"]
        + r.record["response"]["usage"]["output_tokens"]
        for r in records
        if r.kind == "model_call"
    )
    run = RunInfo(
        run_id=run_id,
        name=name,
        status=status,
        started=started,
        ended=started + 5 if ended is None else ended,
        events=sum(r.kind == "published" for r in records),
        records=len(records),
        meta={"url": "redis://127.0.0.1:6379/0", "a": 1, "zz": {"b": [1, 2]}}
        if meta is None
        else meta,
        tokens=tokens,
    )
    chunks = archive_chunks(records, size=chunk_size)
    await archive.store_run(run, chunks, summarize(records), digest(c.body for c in chunks))
    return run, records


@pytest.fixture
async def archive(archive_url: str) -> Any:
    a = PostgresArchive(archive_url)
    assert await a.upgrade() == [1]
    await a.connect()
    try:
        yield a
    finally:
        await a.aclose()


def schema_of(url: str) -> str:
    return parse_postgres_url(url)[1]


# -- migrations -----------------------------------------------------------------------------


async def test_upgrade_applies_v1_once(archive_url: str) -> None:
    a = PostgresArchive(archive_url)
    assert isinstance(a, JournalArchive)
    assert await a.upgrade() == [1]
    assert await a.upgrade() == []
    dsn, schema, _ = parse_postgres_url(archive_url)
    conn = await asyncpg.connect(dsn)
    try:
        assert await current_version(conn, schema) == LATEST == 1
        rows = await conn.fetch(f'SELECT version, description FROM "{schema}".schema_migrations')
        assert [r["version"] for r in rows] == [1]
        tables = {
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
            )
        }
        assert tables == {"runs", "chunks", "schema_migrations"}
    finally:
        await conn.close()
    await a.aclose()


async def test_concurrent_upgrades_apply_each_migration_once(archive_url: str) -> None:
    archives = [PostgresArchive(archive_url) for _ in range(4)]
    results = await asyncio.gather(*(a.upgrade() for a in archives))
    assert sorted(results) == [[], [], [], [1]]
    async with PostgresArchive(archive_url) as a:
        assert await a.list_runs() == []


async def test_connect_before_upgrade_names_the_upgrade_command(archive_url: str) -> None:
    a = PostgresArchive(archive_url)
    with pytest.raises(UsageError, match="agentbus db upgrade") as info:
        await a.connect()
    assert "version 0" in str(info.value)
    assert f"needs {LATEST}" in str(info.value)
    await a.aclose()


async def test_database_newer_than_the_code_is_refused(archive_url: str) -> None:
    a = PostgresArchive(archive_url)
    await a.upgrade()
    dsn, schema, _ = parse_postgres_url(archive_url)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"INSERT INTO \"{schema}\".schema_migrations (version, description) VALUES ($1, 'future')",
            LATEST + 1,
        )
    finally:
        await conn.close()
    with pytest.raises(UsageError, match="newer than this agentbus"):
        await a.connect()
    await a.aclose()


# -- writing and reading back ---------------------------------------------------------------


async def test_store_and_read_back(archive: PostgresArchive) -> None:
    run, records = await store(archive, "run-1", n=23, agents=("планировщик", "worker"))
    got = await archive.get_run("run-1")
    assert got == run
    # The metadata comes back byte for byte (key order included): exports stay identical.
    assert list(got.meta) == ["url", "a", "zz"]
    back = await archive.read_journal("run-1")
    assert back == records
    assert gc.isenabled()  # paused while decoding only
    assert any("日本語" in str(r.record) for r in back)
    summary = await archive.summary("run-1")
    assert summary is not None
    assert summary.to_dict() == summarize(records).to_dict()
    assert summary.agents == ["worker", "планировщик"]
    assert summary.models["gpt-test"]["calls"] == sum(r.kind == "model_call" for r in records)
    assert await archive.get_run("nope") is None
    assert await archive.read_journal("nope") == []
    assert await archive.summary("nope") is None


async def test_storing_again_replaces(archive: PostgresArchive) -> None:
    await store(archive, "run-1", n=20)
    _, records = await store(archive, "run-1", n=7, status="failed")
    assert await archive.read_journal("run-1") == records
    got = await archive.get_run("run-1")
    assert got is not None
    assert (got.status, got.records) == ("failed", 7)
    assert await archive.stored_digest("run-1") == (
        7,
        digest(c.body for c in archive_chunks(records, size=4)),
    )
    assert [r.run_id for r in await archive.list_runs()] == ["run-1"]


async def test_concurrent_stores_of_one_run_both_succeed(archive: PostgresArchive) -> None:
    await asyncio.gather(*(store(archive, "run-1", n=9) for _ in range(4)))
    assert len(await archive.read_journal("run-1")) == 9


async def test_stored_digest_is_the_archivers(archive: PostgresArchive) -> None:
    _, records = await store(archive, "run-1", n=2500, chunk_size=1000)
    chunks = archive_chunks(records)
    assert len(chunks) == 3
    assert await archive.stored_digest("run-1") == (2500, digest(c.body for c in chunks))
    assert await archive.stored_digest("missing") is None
    # A run without records: zero and the digest of nothing, on both sides.
    empty = RunInfo("run-empty", "demo", "completed", T0, T0 + 1)
    await archive.store_run(empty, [], summarize([]), digest([]))
    assert digest([]) == hashlib.sha256(b"").hexdigest()
    assert await archive.stored_digest("run-empty") == (0, digest([]))
    assert await archive.read_journal("run-empty") == []


async def test_a_changed_chunk_changes_the_stored_digest(
    archive: PostgresArchive, archive_url: str
) -> None:
    await store(archive, "run-1", n=12)
    good = await archive.stored_digest("run-1")
    dsn, schema, _ = parse_postgres_url(archive_url)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"UPDATE \"{schema}\".chunks SET body = body || ' '::bytea WHERE run_id = 'run-1' AND first = 4"
        )
    finally:
        await conn.close()
    assert await archive.stored_digest("run-1") != good


# -- queries --------------------------------------------------------------------------------


async def test_list_runs_filters(archive: PostgresArchive) -> None:
    await store(
        archive,
        "a",
        name="etl",
        status="completed",
        started=T0 + 10,
        agents=("alice",),
        types=("x.one",),
    )
    await store(
        archive,
        "b",
        name="etl",
        status="failed",
        started=T0 + 20,
        agents=("bob",),
        types=("x.two",),
    )
    await store(
        archive,
        "c",
        name="chat",
        status="completed",
        started=T0 + 30,
        agents=("alice", "bob"),
        types=("x.one", "x.two"),
    )
    await store(
        archive,
        "d",
        name="chat",
        status="running",
        started=T0 + 40,
        ended=None,
        agents=("carol",),
        types=("x.three",),
    )

    async def ids(**kw: Any) -> list[str]:
        limit = kw.pop("limit", 100)
        return [r.run_id for r in await archive.list_runs(limit=limit, where=RunFilter(**kw))]

    assert [r.run_id for r in await archive.list_runs()] == ["d", "c", "b", "a"]
    assert await ids() == ["d", "c", "b", "a"]
    assert await ids(limit=2) == ["d", "c"]
    assert await ids(name="etl") == ["b", "a"]
    assert await ids(status="completed") == ["c", "a"]
    assert await ids(since=T0 + 20) == ["d", "c", "b"]
    assert await ids(until=T0 + 20) == ["a"]
    assert await ids(since=T0 + 20, until=T0 + 40) == ["c", "b"]
    assert await ids(agent="alice") == ["c", "a"]
    assert await ids(agent="nobody") == []
    assert await ids(type="x.two") == ["c", "b"]
    assert await ids(name="chat", agent="bob") == ["c"]
    assert await ids(agent="alice", type="x.two") == ["c"]
    assert await ids(status="completed", since=T0 + 15, type="x.one") == ["c"]
    assert await ids(
        name="etl", status="failed", since=T0, until=T0 + 100, agent="bob", type="x.two"
    ) == ["b"]
    assert await ids(name="etl", status="running") == []
    # The filter agrees with the hot stores' evaluation of the same filter.
    where = RunFilter(agent="bob", since=T0 + 15)
    every = await archive.list_runs()
    expected = [
        r.run_id
        for r in every
        if where.matches_info(r) and where.matches_records(await archive.read_journal(r.run_id))
    ]
    assert await ids(agent="bob", since=T0 + 15) == expected == ["c", "b"]


async def fill_runs(conn: Any, n: int = 3000) -> None:
    """``n`` runs written directly (the runs table only: plans do not look at chunks)."""
    await conn.execute(
        """
        INSERT INTO runs (run_id, name, status, started, ended, agents, types, checksum)
        SELECT 'r' || i, 'name-' || (i % 50),
               CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'completed' END,
               1700000000 + i, 1700000000 + i + 1,
               ARRAY['agent-' || (i % 200), 'common'], ARRAY['type-' || (i % 300), 'ping'], ''
        FROM generate_series(1, $1::int) AS i
        """,
        n,
    )
    await conn.execute("ANALYZE runs")


@pytest.mark.parametrize(
    ("where", "index"),
    [
        (RunFilter(name="name-7"), "runs_name_started"),
        (RunFilter(status="failed"), "runs_status_started"),
        (RunFilter(since=T0 + 100, until=T0 + 200), "runs_started"),
        (RunFilter(since=T0 + 100), "runs_started"),
        (RunFilter(agent="agent-7"), "runs_agents"),
        (RunFilter(type="type-7"), "runs_types"),
        (RunFilter(), "runs_started"),
    ],
)
async def test_list_runs_is_answered_by_an_index(
    archive: PostgresArchive, archive_url: str, where: RunFilter, index: str
) -> None:
    dsn, schema, _ = parse_postgres_url(archive_url)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})
    try:
        await fill_runs(conn)
        sql, args = list_runs_sql(where, 20)
        await conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
    finally:
        await conn.close()
    assert "Seq Scan" not in plan, plan
    uses = re.search(
        rf"(Index Scan( Backward)?|Index Only Scan) using {index} on runs"
        rf"|Bitmap Index Scan on {index}\b",
        plan,
    )
    assert uses, plan
    if not index.startswith(("runs_agents", "runs_types")):
        # A btree index on (..., started DESC) hands the rows over newest first: no sort,
        # and the scan stops at the limit.
        assert "Sort" not in plan, plan
    # And the same SQL gives what list_runs gives.
    got = await archive.list_runs(limit=20, where=where)
    assert got == sorted(got, key=lambda r: r.started, reverse=True)
    assert all(where.matches_info(r) for r in got)
    assert got


async def test_find_runs_is_answered_by_an_index(
    archive: PostgresArchive, archive_url: str
) -> None:
    dsn, schema, _ = parse_postgres_url(archive_url)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})
    try:
        await fill_runs(conn)
        await conn.execute("SET enable_seqscan = off")
        sql, args = find_runs_sql("r12", 10)
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
    finally:
        await conn.close()
    assert "using runs_run_id_prefix on runs" in plan, plan
    assert "~>=~ 'r12'" in plan, plan
    assert await archive.find_runs("r12", limit=3) == ["r12", "r120", "r1200"]


async def test_find_runs_by_prefix(archive: PostgresArchive) -> None:
    for run_id in ("3f2a-1", "3f2a-2", "3f2b-1", "ab%cd", "abXcd", "ab_cd", "a\\b"):
        await store(archive, run_id, n=1)
    assert await archive.find_runs("3f2a") == ["3f2a-1", "3f2a-2"]
    assert await archive.find_runs("3f2") == ["3f2a-1", "3f2a-2", "3f2b-1"]
    assert await archive.find_runs("3f2", limit=1) == ["3f2a-1"]
    assert await archive.find_runs("ab%") == ["ab%cd"]
    assert await archive.find_runs("ab_") == ["ab_cd"]
    assert await archive.find_runs("a\\") == ["a\\b"]
    assert await archive.find_runs("zz") == []


async def test_prune_runs(archive: PostgresArchive, archive_url: str) -> None:
    await store(archive, "old", started=T0, ended=T0 + 10)
    await store(archive, "old-unended", started=T0 + 5, ended=None)
    await store(archive, "straddles", started=T0, ended=T0 + 200)
    await store(archive, "new", started=T0 + 150, ended=T0 + 160)
    # `store` gives ended=started+5 for ended=None; make one really unended.
    dsn, schema, _ = parse_postgres_url(archive_url)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"UPDATE \"{schema}\".runs SET ended = NULL WHERE run_id = 'old-unended'"
        )
        assert await archive.prune_runs(before=T0 + 100) == ["old", "old-unended"]
        assert (
            await conn.fetchval(
                f"SELECT count(*) FROM \"{schema}\".chunks WHERE run_id LIKE 'old%'"
            )
            == 0
        )
    finally:
        await conn.close()
    assert sorted(r.run_id for r in await archive.list_runs()) == ["new", "straddles"]
    assert await archive.prune_runs(before=T0 + 100) == []


# -- lifecycle and errors -------------------------------------------------------------------


async def test_unreachable_database_is_unavailable_quickly() -> None:
    a = PostgresArchive("postgresql://me:s3cret@127.0.0.1:1/test?schema=x&connect_timeout=3")
    assert "s3cret" not in a.url
    started = time.monotonic()
    with pytest.raises(TransportUnavailable) as info:
        await a.connect()
    assert time.monotonic() - started < 5
    assert "127.0.0.1:1" in str(info.value)
    assert "s3cret" not in str(info.value)
    with pytest.raises(TransportUnavailable):
        await a.upgrade()
    await a.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://127.0.0.1/test?schema=bad-name",
        "postgresql://127.0.0.1/test?schema=1abc",
        "postgresql://127.0.0.1/test?schema=a%22%3Bdrop",
        "postgresql://127.0.0.1/test?schema=pg_catalog",
        "postgresql://127.0.0.1/test?schema=",
        "postgresql://127.0.0.1/test?schema=" + "x" * 64,
        "postgresql://127.0.0.1/test?connect_timeout=soon",
        "mysql://127.0.0.1/test",
    ],
)
def test_bad_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        PostgresArchive(url)


def test_url_parsing_strips_agentbus_options() -> None:
    dsn, schema, timeout = parse_postgres_url(
        "postgres://u:p%40ss@h:5433/db?sslmode=disable&schema=Hist_1&connect_timeout=2.5"
    )
    assert (dsn, schema, timeout) == (
        "postgres://u:p%40ss@h:5433/db?sslmode=disable",
        "Hist_1",
        2.5,
    )
    assert parse_postgres_url("postgresql://h/db")[1:] == ("agentbus", 10.0)
    a = PostgresArchive("postgresql://user:hunter2@h/db?schema=s")
    assert a.url == "postgresql://user:***@h/db?schema=s"
    assert PostgresArchive("postgresql://postgres@h/db").url == "postgresql://postgres@h/db"


async def test_async_with_and_close(archive_url: str) -> None:
    await PostgresArchive(archive_url).upgrade()
    async with PostgresArchive(archive_url) as a:
        await store(a, "run-1", n=3)
        assert await a.find_runs("run") == ["run-1"]
    await a.aclose()
    await a.aclose()
    with pytest.raises(TransportClosed):
        await a.get_run("run-1")
    with pytest.raises(TransportClosed):
        await a.connect()


async def test_methods_connect_on_first_use(archive_url: str) -> None:
    a = PostgresArchive(archive_url)
    await a.upgrade()
    try:
        assert await a.list_runs() == []
    finally:
        await a.aclose()


async def test_a_mixed_case_schema_is_its_own(archive_url: str) -> None:
    base = archive_url.partition("?")[0]
    schema = schema_of(archive_url) + "_MiXed"
    url = f"{base}?schema={schema}"
    a = PostgresArchive(url)
    try:
        assert await a.upgrade() == [1]
        await a.connect()
        await store(a, "run-1", n=2)
        assert await a.stored_digest("run-1") is not None
    finally:
        await a.aclose()
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
