"""redis-py errors in agentbus's words: which are retryable, and what the message says."""

from __future__ import annotations

import pytest
from redis.asyncio.sentinel import MasterNotFoundError, SlaveNotFoundError
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    CrossSlotTransactionError,
    ExecAbortError,
    MasterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)

from agentbus.errors import GroupNotFound, TransportError, TransportUnavailable
from agentbus.transports.redis_client import REDIS_ERRORS, RedisClient

URL = "redis+cluster://app:***@127.0.0.1:7001,127.0.0.1:7002/"


@pytest.fixture
def client() -> RedisClient:
    return RedisClient(
        "redis+cluster://app:pw@127.0.0.1:7001,127.0.0.1:7002/",
        prefix=None,
        connect_timeout=1,
        socket_timeout=1,
    )


# What redis-py raises (its parser strips the codes it knows) -> words in our message.
RETRYABLE = [
    (ReadOnlyError("You can't write against a read only replica."), "read-only replica"),
    (ResponseError("NOREPLICAS Not enough good replicas to write."), "too few replicas"),
    (
        ResponseError(
            "Error in execution: NOREPLICAS Not enough good replicas to write. script: 57a1"
        ),
        "min-replicas-to-write",
    ),
    (
        ExecAbortError("Transaction discarded because of: NOREPLICAS Not enough good replicas"),
        "too few replicas",
    ),
    (TryAgainError("Multiple keys request during rehashing of slot"), "being migrated"),
    (ClusterDownError("The cluster is down"), "has no primary"),
    (
        MasterDownError("Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
        "lost its link to the primary",
    ),
    (BusyLoadingError("Redis is loading the dataset in memory"), "loading its data set"),
    (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "out of memory"),
    (MovedError("3999 127.0.0.1:7002"), "served by another node"),
    (AskError("3999 127.0.0.1:7002"), "being migrated to another node"),
    (SlotNotCoveredError('Slot "12" is not covered by the cluster.'), "Cluster client"),
    (RedisClusterException("Redis Cluster cannot be connected."), "Cluster client"),
    (ClusterError("TTL exhausted."), "Cluster client"),
    (MasterNotFoundError("No master found for 'mymaster'"), "Sentinel found no primary"),
    (SlaveNotFoundError("No slave found for 'mymaster'"), "Sentinel found no primary"),
    (ConnectionError("Error 111 connecting"), "cannot reach Redis"),
]


@pytest.mark.parametrize(("exc", "words"), RETRYABLE)
def test_failover_conditions_are_retryable(client: RedisClient, exc: Exception, words: str) -> None:
    assert isinstance(exc, REDIS_ERRORS)
    error = client.translate(exc)
    assert isinstance(error, TransportUnavailable)
    assert words in str(error)
    assert URL in str(error)
    assert "pw@" not in str(error)


def test_readonly_is_named_even_when_redis_py_dropped_the_code(client: RedisClient) -> None:
    text = str(client.translate(ReadOnlyError("You can't write against a read only replica.")))
    assert "READONLY" in text
    assert "a failover is in progress?" in text


@pytest.mark.parametrize(
    "exc",
    [
        CrossSlotTransactionError(
            "All keys involved in a cluster transaction must map to the same slot"
        ),
        CrossSlotTransactionError("Cannot watch or send commands on different slots"),
        ClusterCrossSlotError("Keys in request don't hash to the same slot"),
        RedisClusterException("EVALSHA - all keys must map to the same key slot"),
        ResponseError("CROSSSLOT Keys in request don't hash to the same slot"),
    ],
)
def test_cross_slot_is_a_bug_not_an_outage(client: RedisClient, exc: Exception) -> None:
    error = client.translate(exc)
    assert type(error) is TransportError
    assert "different hash slots" in str(error)
    assert "This is a bug" in str(error)


def test_other_errors_keep_their_meaning(client: RedisClient) -> None:
    assert isinstance(client.translate(ResponseError("NOGROUP No such key")), GroupNotFound)
    wrong = client.translate(ResponseError("WRONGTYPE Operation against a key"))
    assert type(wrong) is TransportError
    # A word inside a longer one is not the condition ("OOMPH", "LOADINGS").
    assert type(client.translate(ResponseError("ERR OOMPH LOADINGS"))) is TransportError


async def test_call_translates_cluster_exceptions(client: RedisClient) -> None:
    async def crossing() -> None:
        raise CrossSlotTransactionError("Cannot watch or send commands on different slots")

    async def uncovered() -> None:
        raise SlotNotCoveredError('Slot "1" is not covered by the cluster.')

    with pytest.raises(TransportError, match="different hash slots"):
        await client.call(crossing)
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise MovedError("1 127.0.0.1:7002")
        return "ok"

    assert await client.idempotent(flaky) == "ok"
    assert calls == 3
    with pytest.raises(TransportUnavailable):
        await client.idempotent(uncovered, attempts=2)
    await client.aclose()


def test_wait_refused_by_a_demoted_primary_is_retryable() -> None:
    from redis.exceptions import ResponseError

    from agentbus.errors import TransportUnavailable
    from agentbus.transports.redis_errors import translate

    text = "WAIT cannot be used with replica instances. Please also note ..."
    error = translate(ResponseError(text), "redis+cluster://h:1/")
    assert isinstance(error, TransportUnavailable)
    assert "demoted" in str(error)


def test_a_wait_cut_short_by_a_failover_is_retryable() -> None:
    from redis.exceptions import ResponseError

    from agentbus.errors import TransportUnavailable
    from agentbus.transports.redis_errors import translate

    text = "UNBLOCKED force unblock from blocking operation, instance state changed"
    assert isinstance(translate(ResponseError(text), "redis+cluster://h:1/"), TransportUnavailable)
