"""Background tasks that must not die: a crash is logged and the task started again.

The writer (acks and journal records), the lease task and each subscription's read
loop are one task each. If one of them ended on an exception nobody expected, the
runtime would stay up but stop acking, renewing leases or reading: every event after
that would be handled again and again, or never. Each of them handles the failures it
expects itself; the supervisor is there for the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["supervise"]

log = logging.getLogger("agentbus.runtime")

#: The first restart delay; it doubles with each crash up to the maximum.
_FIRST_DELAY_S = 0.05
_MAX_DELAY_S = 5.0
#: A task that ran this long before it crashed starts again with the first delay.
_HEALTHY_S = 30.0


def supervise(body: Callable[[], Coroutine[Any, Any, None]], name: str) -> asyncio.Task[None]:
    """Run ``body()`` in a task named ``name``, and again whenever it raises.

    The task ends when ``body`` returns or when it is cancelled (cancelling it is how
    its owner stops it). Each crash is logged at ERROR with its traceback; the restart
    waits 0.05 s, doubling with every crash in a row up to 5 s.
    """
    return asyncio.get_running_loop().create_task(_supervised(body, name), name=name)


async def _supervised(body: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
    loop = asyncio.get_running_loop()
    delay = _FIRST_DELAY_S
    while True:
        started = loop.time()
        try:
            await body()
            return
        except Exception:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # cancelled (the cancellation was turned into this error): stop
            if loop.time() - started >= _HEALTHY_S:
                delay = _FIRST_DELAY_S
            log.exception("background task %s crashed; restarting it in %.2fs", name, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY_S)
