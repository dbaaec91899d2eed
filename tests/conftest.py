"""Shared fixtures: transports for every backend, Redis with a per-test key prefix.

Under ``CI=true`` a missing Redis is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import pytest

from agentbus import FakeClock, MemoryTransport
from agentbus.testing import redis_url_available, unique_prefix
from agentbus.transports import Transport

REDIS_URL = os.environ.get("AGENTBUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

if IN_CI and not (shutil.which("redis-server") and shutil.which("redis-cli")):
    # The cluster, Sentinel and private-server tests skip without them elsewhere; under CI
    # a missing binary must fail the run, never skip those tests.
    raise pytest.UsageError("redis-server and redis-cli are required under CI=true")


POSTGRES_URL = os.environ.get(
    "AGENTBUS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _postgres_answers(url: str) -> str | None:
    """``None`` when PostgreSQL at ``url`` accepts a connection, else why not."""
    import asyncio
    import concurrent.futures

    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[dev]')"

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=3)
        await conn.close()

    def run() -> None:
        asyncio.run(probe())

    try:
        # Called from async fixtures too: asyncio.run needs a thread without a running loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(run).result()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def require_postgres() -> str:
    """The test PostgreSQL URL; skip (or fail under CI) when nothing answers there."""
    why = _postgres_answers(POSTGRES_URL)
    if why is None:
        return POSTGRES_URL
    if IN_CI:
        pytest.fail(f"PostgreSQL is required under CI=true, {POSTGRES_URL}: {why}")
    pytest.skip(f"no PostgreSQL at {POSTGRES_URL}: {why}")


@pytest.fixture
def postgres_url() -> str:
    """The test PostgreSQL's URL (skip, or fail under CI, when it does not answer)."""
    return require_postgres()


@pytest.fixture
async def archive_url() -> AsyncIterator[str]:
    """A journal archive URL on the test PostgreSQL in a schema of this test's own,
    dropped after the test (``?schema=``: see agentbus.transports.postgres_archive)."""
    import asyncpg

    url = require_postgres()
    schema = "t_" + unique_prefix().replace("-", "_").replace(":", "_").lower()
    yield f"{url}?schema={schema}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def require_redis() -> str:
    """The test Redis URL; skip (or fail under CI) when nothing answers there."""
    if redis_url_available(REDIS_URL):
        return REDIS_URL
    if IN_CI:
        pytest.fail(f"Redis is required under CI=true but does not answer at {REDIS_URL}")
    pytest.skip(f"no Redis at {REDIS_URL}")


@pytest.fixture
def redis_url() -> str:
    return require_redis()


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


async def _cleanup(url: str, prefix: str) -> None:
    # Delete only this test's keys; never FLUSHDB the shared server.
    from agentbus.transports.redis import RedisStreamsTransport

    t = RedisStreamsTransport(url, prefix=prefix)
    try:
        await t.admin.delete_prefix()
    finally:
        await t.aclose()


@pytest.fixture
async def redis_prefix(redis_url: str, prefix: str) -> AsyncIterator[str]:
    """A key prefix on the test Redis, deleted after the test."""
    yield prefix
    await _cleanup(redis_url, prefix)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn; the Redis one carries the ``redis`` marker."""
    return str(request.param)


@pytest.fixture
async def transport(backend: str, prefix: str, clock: FakeClock) -> AsyncIterator[Transport]:
    """An open transport of each kind; the memory one runs on a fake clock."""
    t: Transport
    if backend == "memory":
        t = MemoryTransport(clock=clock)
    else:
        url = require_redis()
        from agentbus.transports.redis import RedisStreamsTransport

        t = RedisStreamsTransport(url, prefix=prefix)
    await t.connect()
    try:
        yield t
    finally:
        await t.aclose()
        if backend == "redis":
            await _cleanup(REDIS_URL, prefix)


@pytest.fixture
async def url_for(backend: str, prefix: str) -> AsyncIterator[str]:
    """A runtime URL for the backend (memory keeps its journal in memory)."""
    if backend == "memory":
        yield "memory://?journal="
    else:
        yield require_redis() + f"?prefix={prefix}"
        await _cleanup(REDIS_URL, prefix)
