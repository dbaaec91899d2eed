"""The journal archive's tables in PostgreSQL, as versioned migrations.

Each entry of :data:`MIGRATIONS` is ``(version, description, SQL)``, applied in order,
each in its own transaction together with its row in ``schema_migrations`` (so a
migration is either wholly applied and recorded, or not at all). Everything lives in
one schema of the caller's choice (``?schema=`` of the archive URL, ``agentbus`` by
default): the SQL names no schema and runs with ``search_path`` set to it.

:func:`upgrade` is what ``agentbus db upgrade`` runs; the archive checks
:func:`current_version` against :data:`LATEST` when it connects and refuses a database
that is behind (or ahead of) this code.

This module never imports asyncpg (only :mod:`.postgres_archive` does): it takes any
connection with asyncpg's ``execute``/``fetchval``/``fetch``/``transaction`` methods.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Protocol

from ..errors import UsageError

__all__ = [
    "LATEST",
    "MIGRATIONS",
    "Connection",
    "current_version",
    "lock_key",
    "quote_schema",
    "upgrade",
    "validate_schema",
]


class Connection(Protocol):
    """The part of an asyncpg connection the migrations use."""

    async def execute(self, query: str, *args: Any) -> str: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    def transaction(self) -> Any: ...


_V1 = """
CREATE TABLE runs (
    run_id        text PRIMARY KEY,
    name          text NOT NULL,
    status        text NOT NULL,
    started       float8 NOT NULL,
    ended         float8 NULL,
    events        int NOT NULL DEFAULT 0,
    records       int NOT NULL DEFAULT 0,
    tokens        bigint NOT NULL DEFAULT 0,
    input_tokens  bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    -- json, not jsonb: the run's metadata comes back byte for byte (key order and
    -- number spelling), so an export of an archived run equals the one taken before.
    meta          json NOT NULL DEFAULT '{}',
    models        jsonb NOT NULL DEFAULT '{}',
    agents        text[] NOT NULL DEFAULT '{}',
    types         text[] NOT NULL DEFAULT '{}',
    checksum      text NOT NULL,
    archived_at   timestamptz NOT NULL DEFAULT now()
);
-- The queries of `agentbus runs`: newest first, optionally by name, status, time range,
-- agent or event type (agents/types through GIN, `@> ARRAY[...]`).
CREATE INDEX runs_started ON runs (started DESC);
CREATE INDEX runs_name_started ON runs (name, started DESC);
CREATE INDEX runs_status_started ON runs (status, started DESC);
CREATE INDEX runs_agents ON runs USING gin (agents);
CREATE INDEX runs_types ON runs USING gin (types);
-- Run id prefixes (`agentbus trace 3f2a`): LIKE 'prefix%' under any collation.
CREATE INDEX runs_run_id_prefix ON runs (run_id text_pattern_ops);

-- A run's records, CHUNK_RECORDS at a time, as the archiver encoded them: bytea, so the
-- digest PostgreSQL computes is over exactly the bytes the archiver hashed.
CREATE TABLE chunks (
    run_id  text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    first   int NOT NULL,
    n       int NOT NULL,
    body    bytea NOT NULL,
    PRIMARY KEY (run_id, first)
);
-- lz4 for the bodies TOAST compresses: storing a 100,000-record run took a quarter of
-- the time pglz took (and checking its digest about half) for ~10% more bytes. A server
-- without lz4 (built without it, or before PostgreSQL 14) keeps its default.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE chunks ALTER COLUMN body SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    NULL;
END
$$;
"""

#: ``(version, description, SQL)`` in the order they apply. Never edit a released entry:
#: append a new one.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "runs and their record chunks", _V1),
]

#: The schema version this code needs.
LATEST = MIGRATIONS[-1][0]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def validate_schema(name: str) -> str:
    """``name`` if it is a usable schema name (letters, digits, ``_``; at most 63;
    not ``pg_*``, which PostgreSQL reserves), else :class:`UsageError`."""
    if not _IDENTIFIER.fullmatch(name) or name.lower().startswith("pg_"):
        raise UsageError(
            f"?schema={name!r} is not a usable PostgreSQL schema name: use letters, digits "
            "and '_' (not starting with a digit or 'pg_', at most 63 characters)"
        )
    return name


def quote_schema(name: str) -> str:
    """The schema name quoted for SQL (validated first: nothing to escape then)."""
    return f'"{validate_schema(name)}"'


def lock_key(schema: str) -> int:
    """The advisory lock key that serializes upgrades of ``schema`` (a signed 64-bit int
    derived from the name, so two schemas in one database upgrade independently)."""
    h = hashlib.sha256(f"agentbus.journal_archive:{schema}".encode()).digest()
    return int.from_bytes(h[:8], "big", signed=True)


async def current_version(conn: Connection, schema: str) -> int:
    """The highest migration applied to ``schema`` (0 when it has none, or no schema)."""
    table = await conn.fetchval(
        "SELECT to_regclass($1)", f"{quote_schema(schema)}.schema_migrations"
    )
    if table is None:
        return 0
    version = await conn.fetchval(
        f"SELECT max(version) FROM {quote_schema(schema)}.schema_migrations"
    )
    return int(version or 0)


async def upgrade(conn: Connection, schema: str) -> list[int]:
    """Apply the migrations ``schema`` lacks, in order, each in its own transaction;
    return the versions applied (``[]`` when current).

    Concurrent upgrades (two deployments starting at once) wait for each other on an
    advisory lock held for the whole upgrade, then find the work done: each migration
    applies once. The schema is created if missing (under the lock, so the two do not
    race on ``CREATE SCHEMA``).
    """
    q = quote_schema(schema)
    key = lock_key(schema)
    await conn.execute("SELECT pg_advisory_lock($1)", key)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {q}.schema_migrations ("
            "version int PRIMARY KEY, description text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {int(r[0]) for r in await conn.fetch(f"SELECT version FROM {q}.schema_migrations")}
        applied: list[int] = []
        for version, description, sql in MIGRATIONS:
            if version in done:
                continue
            async with conn.transaction():
                # SET LOCAL: the migration's unqualified names land in this schema, and the
                # connection's own search_path is back after the commit.
                await conn.execute(f"SET LOCAL search_path TO {q}")
                await conn.execute(sql)
                await conn.execute(
                    f"INSERT INTO {q}.schema_migrations (version, description) VALUES ($1, $2)",
                    version,
                    description,
                )
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)
