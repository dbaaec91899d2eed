"""The Redis connection shared by the roles of the Redis transport.

:class:`RedisClient` owns the connections (one Redis, a Redis Cluster or a primary found
through Sentinel: see :mod:`.urls` for the URL forms), the key names, the closed state and
the translation of redis-py errors into agentbus's. The broker
(:mod:`agentbus.transports.redis`), the journal store (:mod:`.redis_journal`) and the
administration (:mod:`.redis_admin`) each receive it and run their commands through
:meth:`RedisClient.call`, :meth:`RedisClient.idempotent` and writes through
:meth:`RedisClient.run_in_slot`. Errors are translated by :mod:`.redis_errors`.

Why two clients: blocking reads (``XREADGROUP ... BLOCK``) hold a connection for up to
``block_ms``; they get their own client (``blocking``), with a socket timeout well above
the longest block, so they never starve publishes and acks nor trip the socket timeout.

Why no automatic command retries (``retry`` of 0 everywhere, the cluster's too: redis-py's
cluster client would otherwise resend a command after a connection error): a retried
``MULTI``/``EXEC`` or script whose reply was lost could publish twice. Idempotent commands
(reads, acks, group creation, claims) are retried with backoff
(:meth:`RedisClient.idempotent`); publishes surface :class:`TransportUnavailable` and the
caller decides. Redirections are different: MOVED, ASK and TRYAGAIN mean the command did
not run, and the cluster client follows them itself.

What redis-py 8.1's asyncio cluster client does (checked in its source, relied on here):

- ``RedisCluster(startup_nodes=[...])`` discovers the topology from any reachable seed;
  ``require_full_coverage=False`` so that a cluster with a slot briefly uncovered (during
  a failover) still serves the others; writes to that slot fail (CLUSTERDOWN), retryably.
- ``read_from_replicas`` (deprecated) and ``load_balancing_strategy`` stay unset: every
  command goes to the slot's primary, so a read sees every acknowledged write.
- ``retry``: the cluster-level retry count (``cluster_error_retry_attempts`` is its
  deprecated spelling) for ConnectionError, TimeoutError, ClusterDownError and
  SlotNotCoveredError, which resend the command: 0 here (see above). After such an error
  the client re-reads the topology before its next command. MOVED (slot cache patched,
  or the topology re-read every ``reinitialize_steps``), ASK and TRYAGAIN are followed in
  a loop of at most 16 redirections, outside that retry count.
- ``socket_timeout`` and the other connection options apply to each node's connections;
  ``max_connections`` is per node, and a full node pool raises MaxConnectionsError.
- ``scan_iter`` scans every primary (one cursor per node) and yields all keys.
- ``register_script``: EVALSHA is routed by the slot of its keys (all keys must share
  it, else RedisClusterException); on NOSCRIPT it sends SCRIPT LOAD (which the cluster
  client sends to every primary) and EVALSHA again.
- ``pipeline(transaction=True)`` works when every key shares one slot: MULTI/EXEC on one
  connection to that slot's primary; ``watch`` too (the WATCH and the MULTI go over the
  same connection). Keys in two slots raise CrossSlotTransactionError. Its MOVED handling
  goes through the retry count, so with 0 a MOVED is raised (after the topology was
  re-read): :meth:`RedisClient.run_in_slot` runs it once more. Non-transactional
  pipelines are split per node and follow redirections themselves.
- A cluster pipeline refuses ``pipe.evalsha`` (RedisClusterException "Calling pipelined
  function evalsha is blocked"); ``pipe.eval`` (the script's text) works, in both pipeline
  kinds. Use EVAL in a MULTI anyway: a NOSCRIPT inside EXEC would fail that one command
  while the others ran. (A Script object called with ``client=pipe`` is a coroutine in
  the asyncio API: not usable from a synchronous ``build``.)
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    ResponseError,
    WatchError,
)

from ..errors import TransportClosed, TransportError, TransportUnavailable, UsageError
from ..keys import DEFAULT_PREFIX, Keys
from ..redact import url_error
from .redis_errors import REDIS_ERRORS, cross_slot, out_of_memory, tls_failure, translate
from .urls import RedisURL, parse_redis_url, redact_url

__all__ = ["REDIS_ERRORS", "RedisClient"]

T = TypeVar("T")

#: Socket timeout of the client that serves blocking reads; blocks are capped well below.
_BLOCKING_SOCKET_TIMEOUT_S = 30.0


class RedisClient:
    """Connections to one Redis (or a cluster, or a Sentinel-found primary), its key names
    and its error translation.

    ``prefix`` (else ``?prefix=`` in the URL, else the default) namespaces every key.
    Raises :class:`UsageError` for a URL of a bad form and :class:`TransportError` when
    redis-py cannot use it.
    """

    #: redis-py's WatchError, for the roles that WATCH (they do not import redis-py).
    watch_error: type[Exception] = WatchError
    #: redis-py's errors, for the roles that inspect pipeline replies.
    redis_error: tuple[type[BaseException], ...] = REDIS_ERRORS

    def __init__(
        self, url: str, *, prefix: str | None, connect_timeout: float, socket_timeout: float
    ) -> None:
        self.url = redact_url(url)
        parsed = parse_redis_url(url)
        self.keys = Keys(prefix or parsed.prefix or DEFAULT_PREFIX)
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        #: "redis" (one server), "cluster" (Redis Cluster) or "sentinel".
        self.kind = parsed.kind
        #: Whether this is a Redis Cluster (keys of one atomic call must share a slot).
        self.cluster = parsed.kind == "cluster"
        #: Replicas that must acknowledge each write made by run_in_slot (0: off).
        self.wait_replicas = parsed.wait
        self.wait_timeout_ms = parsed.wait_timeout_ms
        self._sentinel: Any = None
        self._next_primary_check = 0.0
        # Typed as Any: redis-py's stubs model every reply as a wide union.
        self.r: Any
        self.blocking: Any
        try:
            self.r = self._build(parsed, socket_timeout)
            self.blocking = self._build(
                parsed, max(socket_timeout, _BLOCKING_SOCKET_TIMEOUT_S), blocking=True
            )
        except (ValueError, TypeError, RedisError, RedisClusterException) as exc:
            raise TransportError(f"invalid Redis URL {self.url!r}: {url_error(url, exc)}") from exc
        self.closed = False

    # -- building -----------------------------------------------------------------------
    def _build(self, parsed: RedisURL, socket_timeout: float, *, blocking: bool = False) -> Any:
        common: dict[str, Any] = {
            "decode_responses": False,
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": socket_timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 15,
        }
        if parsed.kind == "redis":
            client = aioredis.Redis.from_url(parsed.url, **common)
            _check_options(client.connection_pool.connection_class, client, self.url)
            if blocking:  # a ?socket_timeout= in the URL must not cut blocking reads short
                kwargs = client.connection_pool.connection_kwargs
                kwargs["socket_timeout"] = max(kwargs.get("socket_timeout") or 0, socket_timeout)
            return client
        options = _options(parsed, SSLConnection if parsed.tls else Connection, self.url)
        if not blocking:
            options.setdefault("socket_timeout", socket_timeout)
        options = {**common, **options}
        if blocking:
            options["socket_timeout"] = max(options["socket_timeout"], socket_timeout)
        auth: dict[str, Any] = {"username": parsed.username, "password": parsed.password}
        if parsed.kind == "cluster":
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in parsed.hosts],
                require_full_coverage=False,  # (read_from_replicas stays off: its default)
                # redis-py closes the whole client (every in-flight call, blocking reads
                # included) on every 5th MOVED by default; patch the slot cache instead.
                reinitialize_steps=0,
                ssl=parsed.tls,
                **auth,
                **options,
            )
        if self._sentinel is None:
            own = {k: v for k, v in options.items() if k.startswith(("socket_", "ssl"))}
            own |= {
                "username": parsed.sentinel_username,
                "password": parsed.sentinel_password,
                "retry": Retry(NoBackoff(), 0),
                "ssl": parsed.tls,
            }
            self._sentinel = Sentinel(list(parsed.hosts), sentinel_kwargs=own)  # type: ignore[no-untyped-call]
        return self._sentinel.master_for(
            parsed.service, ssl=parsed.tls, db=parsed.db, **auth, **options
        )

    # -- lifecycle ----------------------------------------------------------------------
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
            except REDIS_ERRORS as exc:
                if tls_failure(exc) or loop.time() + delay > deadline:
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
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()

    def check(self) -> None:
        if self.closed:
            raise TransportClosed(f"the Redis transport for {self.url!r} is closed")

    # -- errors -------------------------------------------------------------------------
    def translate(self, exc: BaseException) -> TransportError:
        """The agentbus error for a redis-py error (see :mod:`.redis_errors`)."""
        pool = getattr(self.r, "connection_pool", None)
        return translate(exc, self.url, getattr(pool, "max_connections", None))

    def refused(self, error: str) -> TransportError:
        """The error for a write a script refused with ``error`` (a ``redis.pcall`` error
        text such as ``NOREPLICAS ...`` or ``OOM ...``): retryable when it is an outage."""
        translated = translate(ResponseError(error), self.url)
        if type(translated) is TransportError:
            return TransportError(f"Redis at {self.url!r} refused a write: {error}")
        return translated

    def out_of_memory(self, error: str) -> TransportUnavailable:
        """The error for a write Redis refused for want of memory (retryable)."""
        return out_of_memory(self.url, error)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one command, translating redis-py errors."""
        self.check()
        try:
            if self._sentinel is not None:
                await self._follow_primary()
            return await fn()
        except REDIS_ERRORS as exc:
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

    async def _follow_primary(self) -> None:
        # redis-py asks Sentinel where the primary is only when it opens a connection, and
        # a demoted primary keeps taking writes (lost at its resync) until Sentinel
        # reconfigures it, ~10 s in a measured failover. So ask at most once a second;
        # when the answer changed, idle connections are dropped at once and busy ones
        # when they are given back.
        now = asyncio.get_running_loop().time()
        if now < self._next_primary_check:
            return
        self._next_primary_check = now + 1.0
        for client in (self.r, self.blocking):
            pool = client.connection_pool
            before = pool.master_address
            try:
                await pool.get_master_address()
            except REDIS_ERRORS:
                return  # no sentinel answers: keep the connections we have
            mark = getattr(pool, "update_active_connections_for_reconnect", None)
            if before is not None and pool.master_address != before and mark is not None:
                await mark()  # redis-py >= 8

    # -- writes -------------------------------------------------------------------------
    async def run_in_slot(
        self,
        key: str,
        build: Callable[[Any], None],
        *,
        transaction: bool,
        raise_on_error: bool = True,
    ) -> list[Any]:
        """Run the commands ``build(pipe)`` queues (all keys in ``key``'s hash slot) as one
        pipeline, MULTI/EXEC when ``transaction``; return their replies.

        With ``?wait=N`` in the URL, ``WAIT N timeout`` follows on the same connection
        (WAIT counts the replicas that acknowledged that connection's writes) and
        :class:`TransportUnavailable` is raised when fewer acknowledged in time: the
        write is then on the primary only. Raises redis-py errors (callers translate
        them via :meth:`call`); a cross-slot pipeline raises :class:`TransportError`
        naming its keys. With ``raise_on_error=False`` a failed command's error is its
        reply (as redis-py's ``execute(raise_on_error=False)``); a failed ``WAIT`` still
        raises. With ``?wait=N`` the keys may span several slots of one node (one
        connection): :func:`~.redis_outbox.run_scripts` groups a batch that way.
        """
        if self._sentinel is not None:
            await self._follow_primary()
        for attempt in (1, 2):
            try:
                if self.wait_replicas:
                    replies: list[Any] = await self._pinned(key, build, transaction, raise_on_error)
                    if self.cluster and any(isinstance(r, AskError) for r in replies):
                        # The slot moved (a failover): the replica refused every write
                        # with MOVED, so nothing ran; re-read the topology and send again.
                        raise replies[
                            next(i for i, r in enumerate(replies) if isinstance(r, AskError))
                        ]
                    return replies
                async with self.r.pipeline(transaction=transaction) as pipe:
                    build(pipe)
                    return list(await pipe.execute(raise_on_error=raise_on_error))
            except AskError:  # MovedError too: nothing ran; the topology was re-read
                if attempt == 2 or not self.cluster:
                    raise
                await self.r.nodes_manager.initialize()
            except ResponseError as exc:
                # Our cached master was demoted: its writes were refused (MOVED) and then
                # WAIT was too. Nothing ran; re-read the topology and send again.
                if attempt == 2 or not self.cluster or not _demoted(exc):
                    raise
                await self.r.nodes_manager.initialize()
            except RedisClusterException as exc:
                crossed = cross_slot(exc, self.url, _queued(build))
                if crossed is None:
                    raise
                raise crossed from exc
        raise AssertionError("unreachable")

    async def node_of(self, key: str) -> str:
        """Which master holds ``key`` ("" when there is one: a single Redis, Sentinel)."""
        if not self.cluster:
            return ""
        if self.r._initialize:
            await self.r.initialize()
        node = self.r.get_node_from_key(key)
        return str(node.name) if node is not None else ""

    async def _pinned(
        self, key: str, build: Callable[[Any], None], transaction: bool, raise_on_error: bool
    ) -> Any:
        # One connection for the pipeline and the WAIT after it: a pipeline gives its
        # connection back when it ends, so it gets a "pool" that never takes it.
        if self.cluster:
            if self.r._initialize:
                await self.r.initialize()
            node = self.r.get_node_from_key(key)
            conn = node.acquire_connection()
            callbacks, give_back = node.response_callbacks, node.release
        else:
            pool = self.r.connection_pool
            conn = await pool.get_connection()
            callbacks, give_back = self.r.response_callbacks, pool.release
        finished = False
        try:
            pipe = Pipeline(_Pinned(conn), callbacks, transaction, None)  # type: ignore[arg-type]
            build(pipe)
            replies = await pipe.execute(raise_on_error=raise_on_error)
            timeout = self.wait_timeout_ms
            await conn.send_command("WAIT", self.wait_replicas, timeout)
            acked = int(await conn.read_response(timeout=timeout / 1000 + self.socket_timeout))
            finished = True
        finally:
            if not finished:
                await conn.disconnect()  # a reply may still be on its way: never reuse it
            result = give_back(conn)
            if inspect.isawaitable(result):
                await result
        if acked < self.wait_replicas:
            raise TransportUnavailable(
                f"Redis at {self.url!r}: the write was acknowledged by {acked} of "
                f"{self.wait_replicas} replicas within {timeout} ms; the write is on the "
                "primary and may be lost in a failover"
            )
        return list(replies)


class _Pinned:
    """The connection pool of a pipeline that runs on a connection we hold."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        return self.conn

    async def release(self, conn: Any) -> None:
        return None  # run_in_slot gives it back after the WAIT

    def get_encoder(self) -> Any:
        return self.conn.encoder


def _queued(build: Callable[[Any], None]) -> list[str]:
    """The commands and first keys ``build`` queues (for an error message)."""
    recorder = _Recorder()
    try:
        build(recorder)
    except Exception:
        pass
    return recorder.calls


class _Recorder:
    """Records ``pipe.name(key, ...)`` calls instead of running them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Callable[..., _Recorder]:
        def record(*args: Any, **kwargs: Any) -> _Recorder:
            keys = kwargs.get("keys") or args[:1]
            self.calls.append(f"{name.upper()} {' '.join(map(_text, keys))}".strip())
            return self

        return record


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


#: Query options agentbus passes to redis-py only for the cluster/sentinel kinds.
_POOL_OPTIONS = {"max_connections": int}


def _connection_options(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names |= set(inspect.signature(init).parameters)
    return names - {"self", "args", "kwargs"}


def _check_options(cls: type, client: Any, shown: str) -> None:
    """Refuse query options redis-py would only trip over at the first command."""
    known = _connection_options(cls) | {"connection_class", "max_connections"}
    unknown = sorted(set(client.connection_pool.connection_kwargs) - known)
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r} in the Redis URL {shown!r}")


def _options(parsed: RedisURL, cls: type, shown: str) -> dict[str, Any]:
    """The redis-py options of a cluster or sentinel URL's query, typed."""
    from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS

    known = _connection_options(cls) | set(_POOL_OPTIONS)
    out: dict[str, Any] = {}
    for name, value in parsed.options.items():
        if name not in known or name in ("host", "port", "db", "username", "password"):
            raise UsageError(f"unknown option {name!r} in the Redis URL {shown!r}")
        parse = URL_QUERY_ARGUMENT_PARSERS.get(name)
        try:
            out[name] = parse(value) if parse is not None else value
        except (TypeError, ValueError):
            raise UsageError(f"bad value {value!r} for {name!r} in {shown!r}") from None
    return out


def _demoted(exc: BaseException) -> bool:
    """Whether ``exc`` says the node is a replica (WAIT refused there)."""
    return "WAIT cannot be used with replica" in str(exc)
