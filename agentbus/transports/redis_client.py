"""The Redis connection shared by the roles of the Redis transport.

:class:`RedisClient` owns the two connection pools, the key names, the closed state and
the translation of redis-py errors into agentbus's. The broker
(:mod:`agentbus.transports.redis`), the journal store (:mod:`.redis_journal`) and the
administration (:mod:`.redis_admin`) each receive it and run their commands through
:meth:`RedisClient.call` or :meth:`RedisClient.idempotent`. One of the two modules that
import redis-py (with :mod:`agentbus.transports.redis`).

Why two connection pools: blocking reads (``XREADGROUP ... BLOCK``) hold a connection
for up to ``block_ms``; they get their own pool, with a socket timeout well above the
longest block, so they never starve publishes and acks nor trip the socket timeout.

Why no automatic command retries: a retried ``MULTI``/``EXEC`` whose reply was lost
could publish twice. Idempotent commands (reads, acks, group creation, claims) are
retried with backoff (:meth:`RedisClient.idempotent`); publishes surface
:class:`TransportUnavailable` and the caller decides.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    MaxConnectionsError,
    NoPermissionError,
    OutOfMemoryError,
    RedisError,
    ResponseError,
    WatchError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from ..errors import GroupNotFound, TransportClosed, TransportError, TransportUnavailable
from ..keys import DEFAULT_PREFIX, Keys
from ..redact import url_error
from .urls import redact_url

__all__ = ["RedisClient"]

T = TypeVar("T")

#: Socket timeout of the pool that serves blocking reads; blocks are capped well below.
_BLOCKING_SOCKET_TIMEOUT_S = 30.0


class RedisClient:
    """Connections to one Redis, its key names and its error translation.

    ``prefix`` (else ``?prefix=`` in the URL, else the default) namespaces every key.
    """

    #: redis-py's WatchError, for the roles that WATCH (they do not import redis-py).
    watch_error: type[Exception] = WatchError

    def __init__(
        self, url: str, *, prefix: str | None, connect_timeout: float, socket_timeout: float
    ) -> None:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        url_prefix = query.pop("prefix", None)
        clean = urlunsplit(parts._replace(query=urlencode(query)))
        self.url = redact_url(url)
        self.keys = Keys(prefix or url_prefix or DEFAULT_PREFIX)
        self.connect_timeout = connect_timeout
        common: dict[str, Any] = {
            "decode_responses": False,
            "socket_connect_timeout": connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 15,
        }
        # Typed as Any: redis-py's stubs model every reply as a wide union.
        self.r: Any
        self.blocking: Any
        try:
            self.r = aioredis.Redis.from_url(clean, socket_timeout=socket_timeout, **common)
            self.blocking = aioredis.Redis.from_url(
                clean, socket_timeout=_BLOCKING_SOCKET_TIMEOUT_S, **common
            )
        except (ValueError, RedisError) as exc:
            raise TransportError(f"invalid Redis URL {self.url!r}: {url_error(url, exc)}") from exc
        self.closed = False

    async def connect(self) -> None:
        """Wait (bounded by ``connect_timeout``) for Redis to answer ``PING``."""
        self.check()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        delay = 0.05
        while True:
            try:
                await self.r.ping()
                return
            except (AuthenticationError, NoPermissionError) as exc:
                raise self.translate(exc) from exc
            except RedisError as exc:
                if _tls_failure(exc) or loop.time() + delay > deadline:
                    # A certificate that does not verify will not verify in a second either.
                    raise self.translate(exc) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.r.aclose()
        await self.blocking.aclose()

    def check(self) -> None:
        if self.closed:
            raise TransportClosed(f"the Redis transport for {self.url!r} is closed")

    def translate(self, exc: RedisError) -> TransportError:
        """The agentbus error for a redis-py error."""
        if isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"):
            return GroupNotFound(str(exc))
        if isinstance(exc, OutOfMemoryError):
            return self.out_of_memory(str(exc))
        if isinstance(exc, AuthenticationError | NoPermissionError):
            # The server's message never contains the password; the URL is redacted.
            return TransportUnavailable(
                f"Redis at {self.url!r} refused us: {exc} "
                "(check the user name and password in the URL, and the user's ACL rules)"
            )
        if _tls_failure(exc):
            return TransportUnavailable(
                f"TLS with Redis at {self.url!r} failed: {exc} (check ssl_ca_certs= names the "
                "CA that signed the server's certificate, and that it matches the host)"
            )
        if isinstance(exc, MaxConnectionsError) or str(exc) == "No connection available.":
            # redis-py's pool is full (MaxConnectionsError; "No connection available." from
            # a blocking pool): Redis is fine, this process holds too many connections.
            return TransportUnavailable(
                f"the connection pool for Redis at {self.url!r} is exhausted: all "
                f"{self.r.connection_pool.max_connections} connections are in use ({exc}); "
                "raise max_connections= in the URL (each hosted subscription holds one "
                "connection for its blocking reads) or host fewer agents per process"
            )
        if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
            return TransportUnavailable(
                f"cannot reach Redis at {self.url!r}: {exc} "
                "(is redis-server running? check the URL, port and TLS settings)"
            )
        return TransportError(f"Redis at {self.url!r} failed: {exc}")

    def out_of_memory(self, error: str) -> TransportUnavailable:
        # Retryable: nothing of the refused write was stored (a MULTI is refused whole,
        # a script before its first write), and Redis takes writes again once memory
        # is freed. Acks and reads still work meanwhile.
        return TransportUnavailable(
            f"Redis at {self.url!r} is out of memory and refused a write ({error}); "
            "retry later: it takes writes again once memory is freed (trim or delete "
            "streams, raise maxmemory, or set a maxmemory-policy that evicts)"
        )

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one command, translating redis-py errors."""
        self.check()
        try:
            return await fn()
        except RedisError as exc:
            if self.closed:
                # aclose() cut the connection under a blocking read: say who did it.
                raise TransportClosed(f"the Redis transport for {self.url!r} is closed") from exc
            raise self.translate(exc) from exc

    async def idempotent(self, fn: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
        """Run an idempotent command, retrying connection failures with backoff."""
        delay = 0.05
        for attempt in range(1, attempts + 1):
            try:
                return await self.call(fn)
            except TransportUnavailable:
                if attempt == attempts:
                    raise
                await asyncio.sleep(delay)
                delay *= 4
        raise AssertionError("unreachable")


def _tls_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a TLS/certificate failure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
