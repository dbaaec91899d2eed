"""Helpers for testing agentbus systems (public API, usable in your own tests).

* :func:`wait_for` — poll a condition instead of sleeping.
* :func:`redis_url_available` — whether a Redis answers at a URL.
* :func:`unique_prefix` — a fresh key prefix, so tests never share keys.
* :class:`agentbus.testing.workers.WorkerProcesses` — ``agentbus worker`` subprocesses.
* :class:`agentbus.testing.redis_server.RedisServer` — a throwaway ``redis-server``.
* :class:`agentbus.testing.redis_cluster.LocalCluster` — a throwaway Redis Cluster
  (masters, replicas, ``failover()``), with its ``redis+cluster://`` URL.
* :class:`agentbus.testing.redis_cluster.SentinelGroup` — a throwaway master, replicas and
  Sentinels (``failover()``), with its ``redis+sentinel://`` URL.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from ..envelope import new_id

__all__ = ["redis_url_available", "unique_prefix", "wait_for"]


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> None:
    """Poll ``condition`` (sync or async) until it is true.

    Raises ``TimeoutError`` naming ``message`` after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{message} not met within {timeout}s")
        await asyncio.sleep(interval)


def redis_url_available(url: str, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at a ``redis://`` URL's host and port."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout):
            return True
    except OSError:
        return False


def unique_prefix(label: str = "test") -> str:
    """A key prefix no other test uses, e.g. ``test:01J...:``."""
    return f"{label}:{new_id()}:"
