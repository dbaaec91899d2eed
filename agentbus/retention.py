"""Retention: what a runtime removes on its own, and the durations the CLI accepts.

Every runtime runs a maintenance step every :attr:`Retention.interval` seconds for the
topics it reads: it trims the entries every consumer group has acknowledged, removes
consumers of its groups idle past :attr:`Retention.idle_consumers` with nothing
pending, trims its own reply inbox below what it has read and, when
:attr:`Retention.journal` is set, prunes runs with no activity for that long. Each step
is safe to run from many processes at once (see :mod:`agentbus.transports.base`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import TransportClosed, TransportError, UsageError
from .transports import Transport

__all__ = ["MaintenanceReport", "Retention", "parse_duration"]

log = logging.getLogger("agentbus.retention")

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit, ``30m``, ``12h``, ``7d``, ``2w``.

    A bare number is seconds. Raises :class:`UsageError` for anything else.
    """
    match = _DURATION.match(text)
    if match is None:
        raise UsageError(
            f"invalid duration {text!r}: use a number with a unit s, m, h, d or w "
            "(e.g. 30m, 12h, 7d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@dataclass(frozen=True, slots=True)
class Retention:
    """What a runtime's maintenance step removes, and how often it runs.

    ``interval``: seconds between passes (``None`` turns maintenance off).
    ``trim``: delete topic entries every consumer group has acknowledged.
    ``idle_consumers``: remove consumers idle this many seconds with nothing pending
    (``None`` keeps them). ``journal``: prune runs with nothing recorded for this many
    seconds (``None``, the default, keeps every run). Raises :class:`UsageError` for
    a value that is not positive.
    """

    interval: float | None = 60.0
    trim: bool = True
    idle_consumers: float | None = 3600.0
    journal: float | None = None

    def __post_init__(self) -> None:
        for name in ("interval", "idle_consumers", "journal"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UsageError(f"Retention.{name} must be positive or None, got {value!r}")


@dataclass(slots=True)
class MaintenanceReport:
    """What one maintenance pass removed."""

    trimmed: dict[str, int] = field(default_factory=dict)
    consumers: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)


class Maintenance:
    """A runtime's periodic maintenance task (see the module docstring).

    ``groups`` returns the (topic, group) pairs the runtime reads; ``inbox`` its reply
    inbox and the entry id read up to, or ``None`` when it has none.
    """

    def __init__(
        self,
        transport: Transport,
        retention: Retention,
        groups: Callable[[], Sequence[tuple[str, str]]],
        inbox: Callable[[], tuple[str, str] | None],
    ) -> None:
        self.transport = transport
        self.retention = retention
        self._groups = groups
        self._inbox = inbox
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.retention.interval is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(self.retention.interval), name="agentbus-maintenance"
            )

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=1.0)
            self._task = None

    async def _loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.run_once()
            except TransportClosed:
                return
            except TransportError as exc:  # Redis away: the next pass tries again
                log.warning("maintenance pass failed: %s", exc)
            except Exception:
                log.exception("maintenance pass failed")

    async def run_once(self) -> MaintenanceReport:
        """One pass now; returns what it removed. Raises ``TransportError``."""
        report = MaintenanceReport()
        r = self.retention
        pairs = sorted(set(self._groups()))
        if r.idle_consumers is not None:
            idle_ms = int(r.idle_consumers * 1000)
            for topic, group in pairs:
                gone = await self.transport.admin.remove_idle_consumers(
                    topic, group, idle_ms=idle_ms
                )
                if gone:
                    report.consumers[(topic, group)] = gone
                    log.info("removed idle consumers %s from %s/%s", gone, topic, group)
        if r.trim:
            for topic in sorted({t for t, _ in pairs}):
                report.trimmed[topic] = await self.transport.admin.trim_acknowledged(topic)
            inbox = self._inbox()
            if inbox is not None:
                topic, consumed = inbox
                report.trimmed[topic] = await self.transport.admin.trim_acknowledged(
                    topic, consumed=consumed
                )
        if r.journal is not None:
            report.runs = await self.transport.store.prune_runs(before=time.time() - r.journal)
            if report.runs:
                log.info("pruned %d runs idle for over %gs", len(report.runs), r.journal)
        return report
