"""Retention: what a runtime removes on its own, and the durations the CLI accepts.

Every runtime runs a maintenance step every :attr:`Retention.interval` seconds for the
topics it reads: it trims the entries every consumer group has acknowledged, removes
consumers of its groups idle past :attr:`Retention.idle_consumers` with nothing
pending, trims its own reply inbox below what it has read, deletes the broadcast groups
and reply inboxes of runtimes not seen for :attr:`Retention.dead_consumers` and, when
:attr:`Retention.journal` is set, prunes runs with no activity for that long. Each step
is safe to run from many processes at once (see :mod:`agentbus.transports.contract`).

Independently of that step, a runtime that owns broadcast groups or a reply inbox
announces itself every :attr:`Retention.heartbeat` seconds, so that others can tell it
is alive.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import TransportClosed, TransportError, UsageError
from .transports import Admin, DeadConsumer, Transport

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
    seconds (``None``, the default, keeps every run). ``dead_consumers``: delete the
    broadcast groups and reply inboxes of runtimes not seen for this many seconds
    (``None``: this runtime prunes none; others may). ``heartbeat``: how often this
    runtime says it is alive; others wait at least three of these before calling it
    dead. ``outbox_grace``: journal records a writer left in an outbox (it crashed
    between writing an event and copying its records to the run, see
    ``JournalStore.relay_pending``) are copied by every pass, and once at start, when
    older than this many seconds (a live writer copies them within milliseconds).
    ``wakeups``: how often the runtime looks for questions of the agents it hosts
    that were answered (or passed their deadline) to resume their handlers
    (``ctx.ask_human``; ``None``: never, another process does it).
    Raises :class:`UsageError` for a value that is not positive, or a
    ``dead_consumers`` shorter than three heartbeats.
    """

    interval: float | None = 60.0
    trim: bool = True
    idle_consumers: float | None = 3600.0
    journal: float | None = None
    dead_consumers: float | None = 600.0
    heartbeat: float = 5.0
    outbox_grace: float = 30.0
    wakeups: float | None = 2.0

    def __post_init__(self) -> None:
        names = ("interval", "idle_consumers", "journal", "dead_consumers", "heartbeat")
        for name in (*names, "outbox_grace", "wakeups"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UsageError(f"Retention.{name} must be positive or None, got {value!r}")
        if self.dead_consumers is not None and self.dead_consumers < 3 * self.heartbeat:
            raise UsageError(
                f"Retention.dead_consumers must be at least three heartbeats "
                f"({3 * self.heartbeat:g}s with heartbeat={self.heartbeat!r}), "
                f"got {self.dead_consumers!r}"
            )


@dataclass(slots=True)
class MaintenanceReport:
    """What one maintenance pass removed."""

    trimmed: dict[str, int] = field(default_factory=dict)
    consumers: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    dead: list[DeadConsumer] = field(default_factory=list)
    #: Outbox entries a crashed writer left behind, copied to their runs.
    relayed: int = 0


class Maintenance:
    """A runtime's periodic maintenance task (see the module docstring).

    ``groups`` returns the (topic, group) pairs the runtime reads; ``inbox`` its reply
    inbox and the entry id read up to, or ``None`` when it has none. ``consumer`` and
    ``owned`` (its broadcast groups and its inbox) are what it announces as its presence.
    """

    def __init__(
        self,
        transport: Transport,
        retention: Retention,
        groups: Callable[[], Sequence[tuple[str, str]]],
        inbox: Callable[[], tuple[str, str] | None],
        consumer: str = "",
        owned: Callable[[], tuple[Sequence[tuple[str, str]], str | None]] | None = None,
    ) -> None:
        self.transport = transport
        self.retention = retention
        self._groups = groups
        self._inbox = inbox
        self._consumer = consumer
        self._owned = owned
        self._task: asyncio.Task[None] | None = None
        self._presence: Presence | None = None
        self._repair: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._repair is None:  # what a crashed writer left behind, at once
            self._repair = asyncio.get_running_loop().create_task(
                self._repair_once(), name="agentbus-outbox-repair"
            )
        if self.retention.interval is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(self.retention.interval), name="agentbus-maintenance"
            )
        if self._owned is not None and self._presence is None:
            self._presence = Presence(
                self.transport.admin, self._consumer, self._owned, self.retention.heartbeat
            )
            self._presence.start()

    def owned_changed(self) -> None:
        """Announce the runtime's broadcast groups and inbox now, not at the next beat."""
        if self._presence is not None:
            self._presence.changed.set()

    async def _repair_once(self) -> None:
        try:
            await self.transport.store.relay_pending(older_than=self.retention.outbox_grace)
        except TransportClosed:
            pass
        except TransportError as exc:  # the maintenance passes try again
            log.warning("relaying outbox entries at start failed: %s", exc)
        except Exception:
            log.exception("relaying outbox entries at start failed")

    async def aclose(self) -> None:
        """Stop the maintenance and heartbeat tasks (the presence record stays)."""
        if self._repair is not None:
            self._repair.cancel()
            await asyncio.wait([self._repair], timeout=1.0)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=1.0)
            self._task = None
        if self._presence is not None:
            await self._presence.aclose()

    async def withdraw(self) -> None:
        """Remove the runtime's presence record (after a clean stop removed what it owned)."""
        if self._presence is not None and self._presence.announced:
            try:
                await self.transport.admin.withdraw(self._consumer)
            except TransportError as exc:  # left for the others to prune
                log.debug("could not withdraw the presence of %s: %s", self._consumer, exc)
            self._presence = None

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
        report.relayed = await self.transport.store.relay_pending(older_than=r.outbox_grace)
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
        if r.dead_consumers is not None:
            report.dead = await self.transport.admin.prune_dead_consumers(
                idle_ms=int(r.dead_consumers * 1000)
            )
            for d in report.dead:
                log.info(
                    "pruned runtime %s, not seen for %.0fs: broadcast groups %s, inbox %s",
                    d.consumer,
                    d.idle,
                    [g for _, g in d.groups],
                    d.inbox,
                )
        if r.journal is not None:
            report.runs = await self.transport.store.prune_runs(before=time.time() - r.journal)
            if report.runs:
                log.info("pruned %d runs idle for over %gs", len(report.runs), r.journal)
        return report


class Presence:
    """Announces a runtime and what it owns; refreshes that every ``every`` seconds.

    Announces again when what it owns changes (:attr:`changed`) or when its record is
    gone (pruned while the runtime was paused longer than the threshold: its groups are
    re-created by its reads, and announced again here).
    """

    def __init__(
        self,
        admin: Admin,
        consumer: str,
        owned: Callable[[], tuple[Sequence[tuple[str, str]], str | None]],
        every: float,
    ) -> None:
        self.admin = admin
        self.consumer = consumer
        self._owned = owned
        self.every = every
        self.changed = asyncio.Event()
        self.announced: tuple[tuple[tuple[str, str], ...], str | None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="agentbus-presence")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=1.0)
            self._task = None

    async def beat(self) -> None:
        """Announce or refresh now. Raises ``TransportError``."""
        groups, inbox = self._owned()
        current = (tuple(sorted(set(groups))), inbox)
        if not current[0] and current[1] is None and self.announced is None:
            return  # owns nothing another process would have to clean up
        if current == self.announced and await self.admin.heartbeat(self.consumer):
            return
        await self.admin.announce(
            self.consumer,
            groups=current[0],
            inbox=inbox,
            every_ms=int(self.every * 1000),
        )
        self.announced = current

    async def _loop(self) -> None:
        while True:
            self.changed.clear()
            try:
                await self.beat()
            except TransportClosed:
                return
            except TransportError as exc:  # Redis away: the next beat tries again
                log.warning("announcing runtime %s failed: %s", self.consumer, exc)
            except Exception:
                log.exception("announcing runtime %s failed", self.consumer)
            try:
                async with asyncio.timeout(self.every):
                    await self.changed.wait()
            except TimeoutError:
                pass
