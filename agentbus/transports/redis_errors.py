"""redis-py's errors in agentbus's words: which are retryable, and what they mean.

Retryable (:class:`TransportUnavailable`: publishers may retry with the same envelope, a
handler's attempt is not used up, read loops back off) are the conditions that pass:

- a connection or timeout failure, an exhausted connection pool, Redis still loading its
  data (LOADING), out of memory (OOM: nothing of the refused write was stored);
- failover states: a read-only replica (READONLY: we still talk to a demoted primary),
  too few replicas for ``min-replicas-to-write`` (NOREPLICAS), a replica cut off from its
  primary (MASTERDOWN), a cluster with an unserved slot (CLUSTERDOWN), a slot being
  migrated (TRYAGAIN), a redirection the client did not follow (MOVED/ASK), and the
  cluster or Sentinel client's own failures (``RedisClusterException``: not even a
  ``RedisError``; ``MasterNotFoundError``: no sentinel names a primary).

Not retryable: keys of one atomic call in two hash slots (CROSSSLOT) is a bug in the
caller; it is reported as :class:`TransportError` naming the keys when known.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence

from redis.asyncio.sentinel import MasterNotFoundError, SlaveNotFoundError
from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    ClusterError,
    CrossSlotTransactionError,
    MasterDownError,
    MaxConnectionsError,
    MovedError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import GroupNotFound, TransportError, TransportUnavailable

__all__ = [
    "REDIS_ERRORS",
    "REROUTE_ERRORS",
    "cross_slot",
    "out_of_memory",
    "tls_failure",
    "translate",
]

#: What to catch around a redis-py call: the cluster client's exceptions are not
#: ``RedisError`` subclasses (``CrossSlotTransactionError``, ``SlotNotCoveredError``, ...).
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)

#: Errors after which a cluster read is sent again once the topology was re-read: the
#: connection broke (not a socket timeout: redis-py's TimeoutError is no ConnectionError),
#: the slot moved more often than redis-py follows, or no node serves the slot yet.
REROUTE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    MovedError,
    AskError,
    SlotNotCoveredError,
)

# (error code in the text, class, what it means) -- the code is matched as a word, since
# redis-py keeps it only for codes it knows, and scripts and pipelines wrap the text.
_CONDITIONS: Sequence[tuple[str, type[Exception] | None, str]] = (
    ("READONLY", ReadOnlyError,
     "Redis refused the write: the node is a read-only replica (a failover is in progress?)"),
    ("NOREPLICAS", None,
     "Redis refused the write: too few replicas are connected and up to date "
     "(min-replicas-to-write; a replica is down or lagging)"),
    ("MASTERDOWN", MasterDownError,
     "the replica lost its link to the primary (a failover is in progress?)"),
    ("CLUSTERDOWN", ClusterDownError,
     "the Redis Cluster is down: a hash slot has no primary (a failover is in progress?)"),
    ("TRYAGAIN", TryAgainError,
     "the keys' hash slot is being migrated between cluster nodes (resharding); try again"),
    ("LOADING", BusyLoadingError, "Redis is loading its data set into memory"),
    ("MOVED", MovedError,
     "the key's hash slot is served by another node: the cluster changed under us, or the "
     "URL names one cluster node (use redis+cluster://HOST:PORT,HOST:PORT/)"),
    ("ASK", AskError, "the key's hash slot is being migrated to another node"),
    ("UNBLOCKED", None,
     "Redis cut a blocking call short: the node changed role (a failover; a write waiting "
     "for its replicas may or may not have been kept)"),
    ("WAIT cannot be used with replica", None,
     "Redis refused WAIT: the node is a replica now (demoted in a failover)"),
)  # fmt: skip
_CROSS_SLOT = re.compile(
    r"CROSSSLOT|same slot|same key slot|different slots|hash to the same", re.IGNORECASE
)


def translate(exc: BaseException, url: str, max_connections: int | None = None) -> TransportError:
    """The agentbus error for a redis-py error (``url`` redacted, for the message)."""
    text = str(exc)
    if isinstance(exc, ResponseError) and text.startswith("NOGROUP"):
        return GroupNotFound(text)
    crossed = cross_slot(exc, url)
    if crossed is not None:
        return crossed
    if isinstance(exc, OutOfMemoryError) or re.search(r"\bOOM\b", text):
        return out_of_memory(url, text)
    if isinstance(exc, AuthenticationError | NoPermissionError):
        # The server's message never contains the password; the URL is redacted.
        return TransportUnavailable(
            f"Redis at {url!r} refused us: {exc} "
            "(check the user name and password in the URL, and the user's ACL rules)"
        )
    if tls_failure(exc):
        return TransportUnavailable(
            f"TLS with Redis at {url!r} failed: {exc} (check ssl_ca_certs= names the "
            "CA that signed the server's certificate, and that it matches the host)"
        )
    if isinstance(exc, MaxConnectionsError) or text == "No connection available.":
        # redis-py's pool is full (MaxConnectionsError; "No connection available." from
        # a blocking pool): Redis is fine, this process holds too many connections.
        return TransportUnavailable(
            f"the connection pool for Redis at {url!r} is exhausted: all "
            f"{max_connections or 'its'} connections are in use ({exc}); "
            "raise max_connections= in the URL (each hosted subscription holds one "
            "connection for its blocking reads) or host fewer agents per process"
        )
    for code, cls, meaning in _CONDITIONS:
        if (cls is not None and isinstance(exc, cls)) or re.search(rf"\b{code}\b", text):
            return TransportUnavailable(f"{meaning} (Redis at {url!r}: {_named(exc, code)})")
    if isinstance(exc, MasterNotFoundError | SlaveNotFoundError):
        return TransportUnavailable(
            f"Sentinel found no primary for Redis at {url!r}: {exc} (are the sentinels "
            "running, and do they monitor this service name?)"
        )
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return TransportUnavailable(
            f"cannot reach Redis at {url!r}: {exc} "
            "(is redis-server running? check the URL, port and TLS settings)"
        )
    if isinstance(exc, RedisClusterException | ClusterError):
        return TransportUnavailable(f"the Redis Cluster client for {url!r} failed: {exc}")
    return TransportError(f"Redis at {url!r} failed: {exc}")


def cross_slot(exc: BaseException, url: str, commands: Sequence[str] = ()) -> TransportError | None:
    """The error for keys of one atomic call in two hash slots; ``None`` if not that."""
    if not (
        isinstance(exc, ClusterCrossSlotError | CrossSlotTransactionError)
        or (isinstance(exc, RedisClusterException | ResponseError) and _CROSS_SLOT.search(str(exc)))
    ):
        return None
    keys = f" (commands: {'; '.join(commands)})" if commands else ""
    return TransportError(
        f"Redis at {url!r} refused an atomic call whose keys are in different hash slots: "
        f"{exc}{keys}. This is a bug: every key of one script or MULTI must share one "
        "hash tag"
    )


def out_of_memory(url: str, error: str) -> TransportUnavailable:
    """The error for a write refused for want of memory (retryable)."""
    # Retryable: nothing of the refused write was stored (a MULTI is refused whole, a
    # script before its first write), and Redis takes writes again once memory is freed.
    # Acks and reads still work meanwhile.
    return TransportUnavailable(
        f"Redis at {url!r} is out of memory and refused a write ({error}); "
        "retry later: it takes writes again once memory is freed (trim or delete "
        "streams, raise maxmemory, or set a maxmemory-policy that evicts)"
    )


def _named(exc: BaseException, code: str) -> str:
    # redis-py strips the code of errors it knows (READONLY -> "You can't write ...").
    text = str(exc)
    return text if re.search(rf"\b{code}\b", text) else f"{code} {text}"


def tls_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a TLS/certificate failure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
