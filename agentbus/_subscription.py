"""One agent's read loop: read, spawn a handler per delivery, claim, lease.

Why reads are sized by free handler slots: an entry read but not yet handled sits in
this consumer's pending list with its idle clock running; reading more than we can
handle would let other consumers claim entries we still intend to handle.

What happens to each delivery is :mod:`agentbus._dispatch`'s; how it ends,
:mod:`agentbus._outcome`'s.

A partitioned topic is read from its partition streams too: all of them by a broadcast
subscription, by a shared one those its :class:`~agentbus._ownership.Ownership` holds.
Its runner keeps each partition key's deliveries in order. Its own stream is still read
(as an unpartitioned topic): events published there before the topic was partitioned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from ._delivery import Services, Stamp
from ._dispatch import Dispatcher, Handlers
from ._outcome import Outcomes
from ._ownership import Ownership
from ._retry import doubling, retry_io
from ._runner import Runner
from ._supervise import supervise
from .agent import Agent
from .errors import GroupNotFound, TransportClosed, TransportError, UsageError
from .partitions import partition_key, partition_stream
from .transports import Delivery

__all__ = ["Subscription", "plan"]

log = logging.getLogger("agentbus.runtime")

#: Delays between attempts at reading while the store is unreachable.
_READ_DELAYS = doubling(0.05, 5.0)
#: The longest blocking read while partitions are changing hands (a partition taken
#: over is read from the next read on).
_SETTLING_BLOCK_MS = 50


class Subscription:
    """The handlers of one agent instance that share a mode (one consumer group)."""

    __slots__ = (
        "_cursors",
        "_dispatch",
        "_from_start",
        "_next_claim",
        "_owners",
        "_parts",
        "_reading",
        "_recovered",
        "_released",
        "_round",
        "_runners",
        "_s",
        "_stopping",
        "_task",
        "agent",
        "concurrency",
        "group",
        "mode",
        "shortest_timeout",
        "topics",
    )

    def __init__(
        self,
        services: Services,
        agent: Agent,
        group: str,
        mode: str,
        handlers: Handlers,
        from_start: dict[str, bool],
        partitions: dict[str, int] | None = None,
        member: str | None = None,
    ) -> None:
        settings = services.settings
        self._s = services
        self.agent = agent
        self.group = group
        self.mode = mode
        self.topics = sorted({topic for topic, _ in handlers})
        self._from_start = from_start
        replica = {"consumer": settings.consumer}
        if mode == "broadcast":
            replica["group"] = group
        stamp = Stamp(agent.name, replica)
        self._dispatch = Dispatcher(
            services, agent, stamp, handlers, Outcomes(services, stamp, group)
        )
        self.concurrency = agent.concurrency or settings.concurrency
        # A runner per topic: handlers stuck on one topic use up that topic's slots only,
        # so the agent's other topics keep flowing. One event wakes the reader when any
        # of them has room.
        released = asyncio.Event()
        #: Partitioned topic -> its partition streams.
        self._parts = {
            t: [partition_stream(t, k) for k in range(n)]
            for t, n in (partitions or {}).items()
            if t in self.topics
        }
        self._runners = {
            t: Runner(
                self._dispatch,
                self.concurrency,
                released,
                key_of=partition_key if t in self._parts else None,
            )
            for t in self.topics
        }
        self._released = released
        self._owners: dict[str, Ownership] = {}
        for topic, streams in self._parts.items():
            self._dispatch.add_partitions(topic, streams)
            if mode == "shared":
                self._owners[topic] = Ownership(
                    services,
                    topic,
                    len(streams),
                    group,
                    member or settings.consumer,
                    self._runners[topic],
                    self._streams_in_hand,
                    lambda: self._round,
                )
        #: The streams the read (or claim) in progress covers, and a future done when it
        #: returns.
        self._reading: tuple[str, ...] = ()
        self._round: asyncio.Future[None] | None = None
        limits = [
            spec.timeout if spec.timeout is not None else settings.handler_timeout
            for spec, _ in handlers.values()
        ]
        #: The shortest handler timeout here (``None``: no handler has one).
        self.shortest_timeout = min((t for t in limits if t is not None), default=None)
        self._stopping = False  # a flag, not an Event: one per hosted agent instance
        # The read loop's state, set afresh each time it (re)starts.
        self._recovered = False  # own pending entries read again
        self._next_claim = 0.0
        self._cursors: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await self._create_groups()
        for owner in self._owners.values():
            owner.start()
        self._task = supervise(self._loop, f"agentbus-read-{self.group}")

    async def _create_groups(self) -> None:
        for topic in self.topics:
            for stream in (topic, *self._parts.get(topic, ())):
                await self._s.transport.create_group(
                    stream, self.group, from_start=self._from_start[topic]
                )

    def _streams(self, topics: list[str], *, owned_only: bool = False) -> list[str]:
        """The streams to read for ``topics``: each topic's own, and its partitions (all,
        or with an owner the ones it holds; ``owned_only``: not the unowned ones)."""
        if not self._parts:
            return topics
        out = []
        for topic in topics:
            out.append(topic)
            owner = self._owners.get(topic)
            if owner is not None:
                out.extend(sorted(owner.readable))
            elif not owned_only:
                out.extend(self._parts.get(topic, ()))
        return out

    def _streams_in_hand(self) -> set[str]:
        """Streams a read or claim may still bring entries of: the round in progress,
        and the transport's reads still running after their call returned (their
        entries come with the next round, whichever streams it names)."""
        return {
            *self._reading,
            *self._s.transport.reads_in_flight(self.group, self._s.settings.consumer),
        }

    def _begin_round(self, streams: list[str]) -> None:
        if self._owners:  # an owner giving a partition up waits for this round to end
            self._reading, self._round = tuple(streams), asyncio.get_running_loop().create_future()

    def _end_round(self) -> None:
        if self._round is not None:
            self._round.set_result(None)
            self._reading, self._round = (), None

    def _runner(self, stream: str) -> Runner | None:
        runner = self._runners.get(stream)
        if runner is None:
            topic = self._dispatch.logical.get(stream)
            runner = None if topic is None else self._runners.get(topic)
        return runner

    def stop_reading(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()

    async def finish(self, grace: float) -> int:
        """Wait up to ``grace`` s for in-flight handlers; cancel the rest (left pending)."""
        readers = [t for t in (self._task,) if t is not None]
        for task in readers:
            task.cancel()
        # redis-py finishes a cancelled blocking read before it gives up the connection
        # (up to block_ms); do not wait that long. A read that still returns entries
        # leaves them pending for redelivery, and a NOGROUP after the runtime removed a
        # broadcast group is ignored because _stopping is set.
        await asyncio.wait(readers, timeout=0.2)
        left = await asyncio.gather(*(r.finish(grace) for r in self._runners.values()))
        for owner in self._owners.values():
            await owner.close()
        return sum(left)

    @property
    def inflight(self) -> int:
        """Deliveries queued or being handled."""
        return sum(r.busy for r in self._runners.values())

    @property
    def deadlines(self) -> dict[tuple[str, str], float]:
        """Deadline (loop time) of each handler attempt in progress that has a timeout."""
        return self._dispatch.deadlines

    def expire(self, now: float) -> None:
        """Interrupt suspended handler attempts past their deadline (a failed attempt)."""
        dispatch = self._dispatch
        for key, deadline in list(self.deadlines.items()):
            if key in dispatch.dropped:  # being cancelled with its run: not a timeout
                continue
            if now >= deadline and (dispatch.expired is None or key not in dispatch.expired):
                runner = self._runner(key[0])
                if runner is not None and runner.interrupt(key):
                    if dispatch.expired is None:
                        dispatch.expired = set()
                    dispatch.expired.add(key)

    def active_runs(self) -> Iterable[str]:
        """The runs of the handler attempts in progress here."""
        return self._dispatch.active.values()

    def cancel_run(self, run_id: str) -> None:
        """Cancel the suspended handler attempts of ``run_id`` (acked as cancelled)."""
        dispatch = self._dispatch
        for key, run in list(dispatch.active.items()):
            if run != run_id or key in dispatch.dropped:
                continue
            if dispatch.expired is None or key not in dispatch.expired:  # else timing out:
                # its retry is not made (see Dispatcher._handle)
                runner = self._runner(key[0])
                if runner is not None and runner.interrupt(key):
                    dispatch.dropped.add(key)

    # -- reading ---------------------------------------------------------------------------
    async def _loop(self) -> None:
        what = f"reading for {self.group!r}"
        self._recovered = False
        self._next_claim = time.monotonic() + self._s.settings.claim_interval
        self._cursors = dict.fromkeys(self.topics, "0-0")
        task = asyncio.current_task()
        try:
            while not self._stopping:
                if task is not None and task.cancelling():
                    # Cancelled, but the cancellation was swallowed on the way: redis-py
                    # sends with asyncio.wait_for, which on Python 3.11 drops a cancel
                    # that arrives as the send completes; the read then returns as usual
                    # and, without this check, the loop read again forever.
                    raise asyncio.CancelledError
                # Any exception, not only TransportError: a reader that died would leave
                # the worker saying "hosting" while nothing is read.
                await retry_io(
                    self._read_round,
                    what=what,
                    delays=_READ_DELAYS,
                    retry_on=Exception,
                    on_error=self._read_failed,
                )
        except (TransportClosed, GroupNotFound):
            return  # closed, or our group removed while stopping

    async def _read_group_failed(self, exc: GroupNotFound) -> None:
        if self._stopping:
            raise exc
        log.warning("consumer group %r vanished (%s); recreating it", self.group, exc)
        try:
            await self._create_groups()
        except TransportError:
            pass
        self._recovered = False

    async def _read_failed(self, exc: BaseException) -> None:
        if isinstance(exc, GroupNotFound):
            await self._read_group_failed(exc)
        elif not isinstance(exc, TransportError):
            # Not a store outage: a bug or an untranslated error. Show where it came from.
            log.error("reading for %r raised %r", self.group, exc, exc_info=exc)

    async def _read_round(self) -> None:
        if not self._recovered:
            await self._recover()
            self._recovered = True
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self._s.settings.claim_interval
            await self._claim()
        topics = await self._slots_free()
        # COUNT applies per stream: the fullest topic read bounds the batch.
        count = min(self._s.settings.batch_size, *(self._runners[t].free() for t in topics))
        streams = self._streams(topics)
        block_ms = self._s.settings.block_ms
        self._begin_round(streams)
        if any(o.settling for o in self._owners.values()):
            block_ms = min(block_ms, _SETTLING_BLOCK_MS)  # soon read what is taken
        try:
            batch = await self._s.transport.read_group(
                self.group,
                self._s.settings.consumer,
                streams,
                count=count,
                block_ms=block_ms,
            )
            for d in batch:
                self._spawn(d)
        finally:
            self._end_round()

    async def _recover(self) -> None:
        """Our own pending entries first: a restart of this consumer resumes them.

        Each entry is spawned once: one handled but not yet acked comes back in the next
        page and must not be handled again; a short page is the whole list (re-reading
        would count a delivery of every entry again).
        """
        seen: set[tuple[str, str]] = set()
        while True:
            await self._slots_free()
            want = min(r.free() for r in self._runners.values())
            own = await self._s.transport.read_group(
                self.group,
                self._s.settings.consumer,
                # Held partitions' own pending entries are taken over (Ownership), not here.
                [t for t in self._streams(self.topics) if t not in self._dispatch.logical]
                if self._owners
                else self._streams(self.topics),
                count=want,
                block_ms=None,
                pending=True,
            )
            fresh = [d for d in own if (d.topic, d.entry_id) not in seen]
            for d in fresh:
                seen.add((d.topic, d.entry_id))
                self._spawn(d)
            if not fresh or len(own) < want:
                return

    async def _claim(self) -> None:
        """Take over entries idle past the visibility timeout (their consumer died)."""
        settings = self._s.settings
        # A partition owned by another consumer is never claimed from: its owner handles
        # it in order, or whoever takes it over next. One given up while we claim is
        # released only after this round (what we claimed from it is handled first).
        streams = self._streams(self.topics, owned_only=True)
        self._begin_round(streams)
        try:
            for topic in streams:
                runner = self._runner(topic)
                if runner is None or runner.room() < 1:
                    continue  # full: claim on a later round
                self._cursors[topic], claimed = await self._s.transport.claim_idle(
                    topic,
                    self.group,
                    settings.consumer,
                    min_idle_ms=int(settings.visibility_timeout * 1000),
                    count=runner.free(),
                    cursor=self._cursors.get(topic, "0-0"),
                )
                for d in claimed:
                    log.info("claimed %s/%s idle past the visibility timeout", topic, d.entry_id)
                    self._spawn(d)
        finally:
            self._end_round()

    async def _slots_free(self) -> list[str]:
        """Wait until a topic has room for a delivery; return the topics that have."""
        while True:
            topics = [t for t, r in self._runners.items() if r.room() > 0]
            if topics:
                return topics
            await self._released.wait()
            self._released.clear()

    def _spawn(self, d: Delivery) -> None:
        runner = self._runner(d.topic)
        if runner is not None:
            runner.submit(d)

    async def renew_leases(self, older_than: float) -> None:
        """Keep the lease of long handlers, so no one claims what we are still handling.

        Called by the runtime's one lease task (a task per subscription would cost memory
        for every hosted agent instance).
        """
        now = time.monotonic()
        by_topic: dict[str, list[str]] = {}
        for runner in self._runners.values():
            for (topic, entry_id), started in runner.suspended():
                if now - started >= older_than:
                    by_topic.setdefault(topic, []).append(entry_id)
        for topic, ids in by_topic.items():
            try:
                await self._s.transport.extend_lease(
                    topic, self.group, self._s.settings.consumer, ids
                )
            except TransportError as exc:
                log.warning("extending leases on %r failed: %s", topic, exc)


def plan(agent: Agent) -> tuple[dict[str, Handlers], dict[str, dict[str, bool]]]:
    """Group an agent's handlers by subscription mode; raise UsageError for duplicates."""
    by_mode: dict[str, Handlers] = {}
    from_start: dict[str, dict[str, bool]] = {}
    for spec, types in agent.handlers():
        handlers = by_mode.setdefault(spec.mode, {})
        starts = from_start.setdefault(spec.mode, {})
        for cls in types:
            key = (spec.topic, cls.message_type)
            if key in handlers:
                raise UsageError(
                    f"agent {agent.name!r} has two handlers for {cls.message_type!r} on "
                    f"topic {spec.topic!r}"
                )
            handlers[key] = (spec, cls)
        default = spec.mode == "shared"
        starts[spec.topic] = default if spec.from_start is None else spec.from_start
    return by_mode, from_start
