"""SIGINT/SIGTERM handling for a process that serves until asked to stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["on_stop_signals"]


@contextmanager
def on_stop_signals(callback: Callable[[], None], *, enabled: bool = True) -> Iterator[None]:
    """Call ``callback`` on SIGINT/SIGTERM while inside (where the loop supports it)."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM) if enabled else ():
        try:
            loop.add_signal_handler(sig, callback)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
