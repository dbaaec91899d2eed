"""Start a delivery's handler task, eagerly where Python supports it (3.12+).

Most deliveries are handled without the handler ever suspending (acks and journal
records are queued, not awaited). Python 3.12's eager tasks run such a coroutine to
completion inside ``create_task`` and skip the scheduling round trip through the event
loop. On 3.11 a plain task is made: running the first step by hand would leave
``asyncio.current_task()`` pointing at the read loop during that step, and anything
that captures the current task there (``asyncio.timeout``, anyio cancel scopes in
httpx) would later cancel the wrong task.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

__all__ = ["start_task"]

_EAGER = sys.version_info >= (3, 12)


def start_task(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Start ``coro`` as a task; on 3.12+ it may already be done when this returns."""
    loop = asyncio.get_running_loop()
    if _EAGER:
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    return loop.create_task(coro)
