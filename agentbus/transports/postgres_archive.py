"""The journal archive in PostgreSQL (asyncpg): finished runs kept for history.

A :class:`~agentbus.transports.contract.JournalArchive`. URL::

    postgresql://[user[:password]@]HOST[:PORT]/DATABASE[?schema=NAME&OPTION=VALUE...]

``postgres://`` works too. Options read here (removed before asyncpg sees the URL):
``schema`` (where the tables live, default ``agentbus``) and ``connect_timeout``
(seconds, default 10). Every other option is asyncpg's (``sslmode``, ...) or a server
setting.

A run is one row of ``runs`` (metadata, counters and the summary its queries use) and
its records in ``chunks`` rows (see :mod:`.archive_format`); the tables and indexes are
in :mod:`.postgres_schema`. Queries are answered by indexes: :func:`list_runs_sql` is
the one SQL builder, which the tests EXPLAIN.
"""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode

import asyncpg

from .. import _json
from ..errors import TransportClosed, TransportUnavailable, UsageError
from ..redact import redact_text, redact_url
from . import postgres_schema
from .archive_format import ArchiveChunk, RunSummary, decode_chunk
from .base import JournalRecord, RunInfo
from .run_query import RunFilter

__all__ = [
    "DEFAULT_SCHEMA",
    "PostgresArchive",
    "find_runs_sql",
    "list_runs_sql",
    "parse_postgres_url",
    "shown_url",
]

#: The schema used when the URL names none.
DEFAULT_SCHEMA = "agentbus"
_DEFAULT_CONNECT_TIMEOUT = 10.0
_SCHEMES = ("postgresql", "postgres")

#: The columns a :class:`RunInfo` is built from, in :func:`_run_info`'s order.
_RUN_COLUMNS = "run_id, name, status, started, ended, events, records, tokens, meta"

#: What says "the database cannot be reached (now)", as opposed to a query's own error.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)


def shown_url(url: str) -> str:
    """``url`` with its password masked (:func:`redact_url`), but a user name without a
    password kept: in a PostgreSQL URL that is the role (``postgresql://postgres@host``),
    not a token, and the URL stays one an operator can paste into the upgrade command."""
    scheme, sep, rest = url.partition("://")
    info, at, after = rest.rpartition("@")
    if sep and at and info and not re.search(r"[:/?#]", info):
        return f"{scheme}://{info}@" + redact_url(f"{scheme}://{after}")[len(scheme) + 3 :]
    return redact_url(url)


def parse_postgres_url(url: str) -> tuple[str, str, float]:
    """``(dsn for asyncpg, schema, connect timeout)`` from an archive URL.

    Raises :class:`UsageError` for another scheme, a bad schema name or timeout.
    """
    shown = shown_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise UsageError(f"not a PostgreSQL URL: {shown!r} (postgresql://HOST/DATABASE)")
    # Everything before the last '@' is userinfo: a '?' in a password is not the query.
    info, at, after = rest.rpartition("@")
    if not at:
        info, after = "", rest
    base, _, query_text = after.partition("?")
    query = parse_qsl(query_text, keep_blank_values=True)
    schema = DEFAULT_SCHEMA
    timeout = _DEFAULT_CONNECT_TIMEOUT
    kept: list[tuple[str, str]] = []
    for name, value in query:
        if name == "schema":
            schema = value
        elif name == "connect_timeout":
            try:
                timeout = float(value)
            except ValueError:
                timeout = -1.0
            if not timeout > 0:
                raise UsageError(
                    f"?connect_timeout= takes seconds (> 0), got {value!r} in {shown!r}"
                )
        else:
            kept.append((name, value))
    try:
        postgres_schema.validate_schema(schema)
    except UsageError as exc:
        raise UsageError(f"{exc} (in {shown!r})") from None
    dsn = f"{scheme}://{info}{at}{base}" + (f"?{urlencode(kept)}" if kept else "")
    return dsn, schema, timeout


def list_runs_sql(where: RunFilter | None, limit: int) -> tuple[str, list[Any]]:
    """The query :meth:`PostgresArchive.list_runs` sends, and its arguments.

    Each condition is one an index answers: name and status lead a ``(column, started
    DESC)`` index (rows come out newest first, the scan stops at ``limit``), a time
    range alone uses ``(started DESC)``, agent and type the GIN indexes on the arrays.
    """
    conds: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if where is not None:
        if where.name is not None:
            conds.append(f"name = {arg(where.name)}")
        if where.status is not None:
            conds.append(f"status = {arg(where.status)}")
        if where.since is not None:
            conds.append(f"started >= {arg(float(where.since))}")
        if where.until is not None:
            conds.append(f"started < {arg(float(where.until))}")
        if where.agent is not None:
            conds.append(f"agents @> ARRAY[{arg(where.agent)}::text]")
        if where.type is not None:
            conds.append(f"types @> ARRAY[{arg(where.type)}::text]")
    sql = f"SELECT {_RUN_COLUMNS} FROM runs"
    if conds:
        sql += " WHERE " + " AND ".join(conds)
    sql += f" ORDER BY started DESC LIMIT {arg(int(limit))}"
    return sql, args


def find_runs_sql(prefix: str, limit: int) -> tuple[str, list[Any]]:
    """The query :meth:`PostgresArchive.find_runs` sends, and its arguments.

    ``LIKE 'prefix%'`` on the ``text_pattern_ops`` index becomes a range scan of it (in
    the plan of the given value, which asyncpg's prepared statements get while it is
    cheaper than a generic one). ``\\``, ``%`` and ``_`` in the prefix are escaped.
    """
    pattern = re.sub(r"([\\%_])", r"\\\1", prefix) + "%"
    return "SELECT run_id FROM runs WHERE run_id LIKE $1 ORDER BY run_id USING ~<~ LIMIT $2", [
        pattern,
        int(limit),
    ]


def _run_info(row: Any) -> RunInfo:
    return RunInfo(
        run_id=row["run_id"],
        name=row["name"],
        status=row["status"],
        started=row["started"],
        ended=row["ended"],
        events=row["events"],
        records=row["records"],
        tokens=row["tokens"],
        meta=_json.loads(row["meta"]),
    )


class PostgresArchive:
    """Finished runs in PostgreSQL (see the module doc). ``async with`` connects and closes."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self._dsn, self.schema, self._timeout = parse_postgres_url(url)
        #: The URL, password masked.
        self.url = shown_url(url)
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None  # asyncpg.Pool once connected
        self._closed = False
        self._lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the pool and check the schema version.

        Raises :class:`TransportUnavailable` when PostgreSQL does not answer and
        :class:`UsageError` when the schema is not at this code's version.
        """
        async with self._lock:
            if self._closed:
                raise TransportClosed(f"journal archive {self.url} is closed")
            if self._pool is not None:
                return
            try:
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    timeout=self._timeout,
                    # Unqualified names in every query are this schema's tables.
                    server_settings={"search_path": postgres_schema.quote_schema(self.schema)},
                )
            except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
                # PostgresError here: the server refused us (password, no such database).
                raise self._unavailable(exc) from exc
            try:
                async with pool.acquire() as conn:
                    version = await postgres_schema.current_version(conn, self.schema)
                self._check_version(version)
            except BaseException as exc:
                await pool.close()
                if isinstance(exc, _UNAVAILABLE):
                    raise self._unavailable(exc) from exc
                raise
            if self._closed:  # aclose() ran while the pool was opening
                await pool.close()
                raise TransportClosed(f"journal archive {self.url} is closed")
            self._pool = pool

    def _check_version(self, version: int) -> None:
        latest = postgres_schema.LATEST
        if version < latest:
            raise UsageError(
                f"journal archive {self.url} (schema {self.schema!r}) is at version {version}, "
                f"this agentbus needs {latest}: run `agentbus db upgrade --journal-url "
                f"{self.url}`"
            )
        if version > latest:
            raise UsageError(
                f"journal archive {self.url} (schema {self.schema!r}) is at version {version}, "
                f"newer than this agentbus knows ({latest}): upgrade agentbus"
            )

    async def aclose(self) -> None:
        """Close the pool. Idempotent."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> PostgresArchive:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def upgrade(self) -> list[int]:
        """Apply the missing migrations (see :func:`.postgres_schema.upgrade`); needs no
        :meth:`connect` (a database that is behind cannot connect)."""
        if self._closed:
            raise TransportClosed(f"journal archive {self.url} is closed")
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._timeout)
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise self._unavailable(exc) from exc
        try:
            return await postgres_schema.upgrade(conn, self.schema)
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        finally:
            await conn.close()

    def _unavailable(self, exc: BaseException) -> TransportUnavailable:
        why = redact_text(str(exc)) or type(exc).__name__
        return TransportUnavailable(f"journal archive {self.url} is unavailable: {why}")

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        """A pooled connection (connecting first if needed), errors translated."""
        if self._pool is None:
            await self.connect()
        pool = self._pool
        if pool is None:  # closed while connecting
            raise TransportClosed(f"journal archive {self.url} is closed")
        try:
            async with pool.acquire() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        except asyncpg.InterfaceError as exc:
            if self._closed:  # the pool was closed under a running query
                raise TransportClosed(f"journal archive {self.url} is closed") from exc
            raise

    # -- writing ----------------------------------------------------------------------------
    async def store_run(
        self, run: RunInfo, chunks: Sequence[ArchiveChunk], summary: RunSummary, checksum: str
    ) -> None:
        """Write the run whole, replacing any earlier copy, in one transaction.

        An upsert of the run row, not delete-then-insert: it locks the row, so two
        archivers storing the same run at once take turns instead of one failing on the
        primary key; the second then replaces the first's chunks.
        """
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO runs (run_id, name, status, started, ended, events, records,
                    tokens, input_tokens, output_tokens, meta, models, agents, types, checksum)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                ON CONFLICT (run_id) DO UPDATE SET
                    name = EXCLUDED.name, status = EXCLUDED.status,
                    started = EXCLUDED.started, ended = EXCLUDED.ended,
                    events = EXCLUDED.events, records = EXCLUDED.records,
                    tokens = EXCLUDED.tokens, input_tokens = EXCLUDED.input_tokens,
                    output_tokens = EXCLUDED.output_tokens, meta = EXCLUDED.meta,
                    models = EXCLUDED.models, agents = EXCLUDED.agents,
                    types = EXCLUDED.types, checksum = EXCLUDED.checksum,
                    archived_at = now()
                """,
                run.run_id,
                run.name,
                run.status,
                float(run.started),
                None if run.ended is None else float(run.ended),
                run.events,
                run.records,
                run.tokens,
                summary.input_tokens,
                summary.output_tokens,
                _json.dumps(run.meta).decode(),
                _json.dumps(summary.models).decode(),
                list(summary.agents),
                list(summary.types),
                checksum,
            )
            await conn.execute("DELETE FROM chunks WHERE run_id = $1", run.run_id)
            if chunks:
                # executemany (asyncpg pipelines it), not binary COPY: 100 bodies of
                # ~340 KB went in 26 ms against COPY's 37 ms (lz4), 177 against 186 (pglz).
                await conn.executemany(
                    "INSERT INTO chunks (run_id, first, n, body) VALUES ($1, $2, $3, $4)",
                    [(run.run_id, c.first, c.n, c.body) for c in chunks],
                )

    async def prune_runs(self, *, before: float) -> list[str]:
        """Delete archived runs that ended (or started, never having ended) before
        ``before``, with their chunks; returns their ids."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                "DELETE FROM runs WHERE coalesce(ended, started) < $1 RETURNING run_id",
                float(before),
            )
        return sorted(r["run_id"] for r in rows)

    # -- reading ----------------------------------------------------------------------------
    async def stored_digest(self, run_id: str) -> tuple[int, str] | None:
        """(records, SHA-256 of the chunk bodies in order) computed by PostgreSQL from
        what it holds; ``None`` when the run is not archived. A run without records
        gives ``(0, sha256(b""))``, as :func:`.archive_format.digest` of nothing."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                """
                SELECT coalesce(sum(c.n), 0) AS n,
                       encode(sha256(coalesce(
                           string_agg(c.body, ''::bytea ORDER BY c.first), ''::bytea)),
                           'hex') AS digest
                FROM runs r LEFT JOIN chunks c ON c.run_id = r.run_id
                WHERE r.run_id = $1
                GROUP BY r.run_id
                """,
                run_id,
            )
        return None if row is None else (int(row["n"]), str(row["digest"]))

    async def get_run(self, run_id: str) -> RunInfo | None:
        """An archived run's metadata and counters, or ``None``."""
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = $1", run_id)
        return None if row is None else _run_info(row)

    async def read_journal(self, run_id: str) -> list[JournalRecord]:
        """An archived run's records in journal order (``[]`` when not archived)."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT body FROM chunks WHERE run_id = $1 ORDER BY first", run_id
            )
        out: list[JournalRecord] = []
        # Decoding a large run allocates millions of containers, each allocation burst
        # setting off a collection that walks everything decoded so far: 100,000 records
        # took 1.4 s with the collector on, 0.25 s with it paused. Nothing is awaited in
        # between, so no other task runs without it.
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            for row in rows:
                out.extend(decode_chunk(run_id, row["body"]))
        finally:
            if paused:
                gc.enable()
        return out

    async def list_runs(self, *, limit: int = 100, where: RunFilter | None = None) -> list[RunInfo]:
        """Archived runs meeting ``where``, newest first (see :func:`list_runs_sql`)."""
        sql, args = list_runs_sql(where, limit)
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *args)
        return [_run_info(r) for r in rows]

    async def summary(self, run_id: str) -> RunSummary | None:
        """The summary stored with the run, or ``None`` when it is not archived."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT agents, types, input_tokens, output_tokens, models "
                "FROM runs WHERE run_id = $1",
                run_id,
            )
        if row is None:
            return None
        return RunSummary(
            agents=list(row["agents"]),
            types=list(row["types"]),
            input_tokens=int(row["input_tokens"]),
            output_tokens=int(row["output_tokens"]),
            models=_json.loads(row["models"]),
        )

    async def find_runs(self, prefix: str, *, limit: int = 10) -> list[str]:
        """Ids of archived runs starting with ``prefix`` (literally: ``%`` and ``_`` in
        it match themselves), in byte order (the prefix index's)."""
        sql, args = find_runs_sql(prefix, limit)
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *args)
        return [r["run_id"] for r in rows]
