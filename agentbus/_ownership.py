"""Which partitions of a topic one replica of a shared subscription reads, and when.

Each replica (a *member*) beats in the topic's members hash every lease/3 and computes
the assignment from the live members (:func:`agentbus.partitions.assign`; every member
computes the same). It holds a lease per partition it reads, renewed with each beat:

- **taking** a partition: its lease is taken only once free (the previous owner released
  it or stopped renewing it: released, or dead). Before reading new entries, the new owner
  claims every entry still pending there, in id order, and queues them first, so the
  previous owner's unfinished events are handled before anything after them;
- **giving up** a partition (assigned elsewhere): it stops reading it, waits until the
  deliveries it read from it have ended (acked or dead-lettered) and the acks are
  written, then deletes the lease if still its own (compare and delete);
- a lease found taken by another (ours expired: a stall past the lease) is dropped at once
  and its partition no longer read; one not renewed for most of the lease time (the store
  unreachable) is treated the same, before it can expire under our feet.

Why one owner per partition is enough for per-key order, and what a stall longer than the
lease can still do: docs/architecture.md, "Partitioned topics".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Coroutine
from typing import TYPE_CHECKING, Any

from ._retry import doubling, retry_io
from ._supervise import supervise
from .errors import TransportClosed, TransportError
from .partitions import assign, partition_stream
from .transports import Delivery
from .transports.base import entry_id_key

if TYPE_CHECKING:
    from ._delivery import Services
    from ._runner import Runner

__all__ = ["Ownership"]

log = logging.getLogger("agentbus.runtime")

_DELAYS = doubling(0.05, 2.0)


class Ownership:
    """The partitions of ``topic`` that ``member`` of ``group`` reads (:attr:`readable`).

    ``reading()`` tells which streams the subscription's read in progress covers and
    ``round_end()`` waits for that read to return: a partition is given up only once no
    read can still bring entries of it.
    """

    def __init__(
        self,
        services: Services,
        topic: str,
        count: int,
        group: str,
        member: str,
        runner: Runner,
        reading: Callable[[], Collection[str]],
        round_end: Callable[[], asyncio.Future[None] | None],
    ) -> None:
        self._s = services
        self.topic = topic
        self.count = count
        self.group = group
        self.member = member
        self._runner = runner
        self._reading = reading
        self._round_end = round_end
        self._lease = services.settings.partition_lease
        #: Partition streams whose lease is ours (renewed with each beat).
        self.held: set[str] = set()
        #: Held and taken over: read by the subscription.
        self.readable: set[str] = set()
        self._releasing: set[str] = set()
        self._wanted: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # lease calls one at a time: a release is never undone
        self._last_ok = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    @property
    def settling(self) -> bool:
        """Whether partitions are changing hands here: one assigned here is not read yet
        (being taken or waited for), or one is being given up."""
        return self._wanted != self.readable or bool(self._releasing)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._task = supervise(self._loop, f"agentbus-partitions-{self.topic}-{self.group}")

    async def close(self) -> None:
        """Stop taking partitions and release those held (after the handlers ended)."""
        self.readable.clear()
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        transport = self._s.transport
        try:
            await self._s.writer.flush()  # our acks first, or the next owner handles them again
            for stream in sorted(self.held):
                await transport.release_lease(stream, self.group, self.member)
            await transport.remove_member(self.topic, self.group, self.member)
        except TransportError as exc:  # they expire on their own
            log.warning("could not release the partitions of %r: %s", self.topic, exc)
        self.held.clear()

    # -- the beat -----------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                await self._beat()
                self._last_ok = time.monotonic()
            except TransportClosed:
                return
            except TransportError as exc:
                log.warning("partition heartbeat for %r failed: %s", self.topic, exc)
                if time.monotonic() - self._last_ok > self._lease * 0.7 and self.held:
                    # Our leases may expire before we can renew them: stop reading now.
                    log.warning(
                        "stopped reading the partitions of %r: leases unconfirmed", self.topic
                    )
                    self.readable.clear()
                    self.held.clear()
            waiting = self._wanted - self.held
            await asyncio.sleep(max(self._lease / (10 if waiting else 3), 0.02))

    async def _beat(self) -> None:
        ttl_ms = int(self._lease * 1000)
        transport = self._s.transport
        members = await transport.heartbeat_member(
            self.topic, self.group, self.member, ttl_ms=ttl_ms
        )
        mine = assign([*members, self.member], self.count).get(self.member, set())
        self._wanted = {partition_stream(self.topic, k) for k in mine}
        for stream in sorted(self.held - self._wanted - self._releasing):
            self._releasing.add(stream)
            self._spawn(self._release(stream))
        async with self._lock:
            ask = sorted(self.held | self._wanted)
            got = await transport.acquire_leases(self.group, self.member, ask, ttl_ms=ttl_ms)
        for stream, ours in zip(ask, got, strict=True):
            if ours and stream not in self.held:
                self.held.add(stream)
                if stream in self._wanted:
                    self._spawn(self._take(stream))
                # else: taken while another beat released it; released on the next beat
            elif not ours and stream in self.held:
                log.warning("lost the lease of %s to another consumer", stream)
                self.held.discard(stream)
                self.readable.discard(stream)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- taking and giving up -------------------------------------------------------------------
    async def _take(self, stream: str) -> None:
        """Claim what the previous owners left pending, queue it in id order, then read."""
        settings = self._s.settings
        cursor = "0-0"
        while stream in self.held:
            cursor, claimed = await retry_io(
                lambda c=cursor: self._s.transport.claim_idle(  # type: ignore[misc]
                    stream,
                    self.group,
                    settings.consumer,
                    min_idle_ms=0,
                    count=settings.batch_size,
                    cursor=c,
                ),
                what=f"taking over {stream}",
                delays=_DELAYS,
            )
            if stream not in self.held or stream in self._releasing:
                # Given up while claiming: what we claimed was never handled here, and
                # the next owner claims it again (release waits for nothing of ours).
                break
            for d in sorted(claimed, key=_by_id):
                self._runner.submit(d)
            if claimed:
                log.info("took over %d pending entries of %s", len(claimed), stream)
            if cursor == "0-0":
                break
        if stream in self.held and stream not in self._releasing:
            self.readable.add(stream)

    async def _release(self, stream: str) -> None:
        """Give ``stream`` up once nothing read from it is still in hand."""
        try:
            self.readable.discard(stream)
            # Every read that may bring entries of it must have returned them: the round
            # in progress, and a blocking read the transport left running after its call
            # returned (one per hash slot); its entries come with a later round. An
            # entry read after the lease is gone would be handled twice, here and by the
            # next owner, who claims whatever is pending.
            while stream in self._reading():
                end = self._round_end()
                if end is None:  # between rounds: the next one takes what is left
                    await asyncio.sleep(0.02)
                else:
                    await asyncio.shield(end)
            # Polled: the runner's release event belongs to the read loop (which clears
            # it), and a partition is given up rarely.
            while self._runner.holds(stream):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await self._s.writer.flush()
            async with self._lock:
                if stream in self.held:
                    await retry_io(
                        lambda: self._s.transport.release_lease(stream, self.group, self.member),
                        what=f"releasing {stream}",
                        delays=_DELAYS,
                    )
                    self.held.discard(stream)
        finally:
            self._releasing.discard(stream)


def _by_id(d: Delivery) -> tuple[int, int]:
    return entry_id_key(d.entry_id)
