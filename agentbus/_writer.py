"""Batches acknowledgements and run-log records into few round trips.

Acks and delivery records are queued and written by one flusher task. It writes as
soon as something is queued; while a write is in flight new items pile up and go out
together next time. Under load that gives large batches, at idle it adds no delay.

Records that must precede an event a handler publishes (its ``delivered`` record) are
taken by that publish's own pipeline (:meth:`take_records`), so a run's log reads in
causal order.

When a batch fails: for the store's sake (a ``TransportError``), it is retried, but
its acks are first tried alone, because a store out of memory refuses records yet
takes acks, and an unacked handled event would be run again; for any other reason,
the batch is written piece by piece and only what still fails is set aside.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from ._retry import doubling
from ._supervise import supervise
from .errors import TransportClosed, TransportError
from .transports import Ack, JournalEntry

if TYPE_CHECKING:
    from .transports import RunInfo, Transport

log = logging.getLogger("agentbus.runtime")
_T = TypeVar("_T")
#: Delays between attempts at a batch that failed for the store's sake.
_DELAYS = doubling(0.05, 2.0)


class Writer:
    """The runtime's way into the run log: queued acks and records, written in batches.

    With ``recording`` off (``Runtime(journal=False)``) records are dropped here.
    """

    def __init__(self, transport: Transport, *, recording: bool = True) -> None:
        self._transport = transport
        self.recording = recording
        self._acks: list[Ack] = []
        self._records: list[JournalEntry] = []
        self._marks: list[tuple[str, int]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = supervise(self._run, "agentbus-writer")

    def record(self, entry: JournalEntry) -> None:
        """Queue a record to be written with the next batch."""
        if self.recording:
            self._records.append(entry)
            self._kick()

    def ack(self, ack: Ack, record: JournalEntry | None = None) -> None:
        """Queue an ack together with its outcome record."""
        self._acks.append(ack)
        if record is not None and self.recording:
            self._records.append(record)
        self._kick()

    def take_records(self) -> list[JournalEntry]:
        """Hand the queued records to a caller that writes them itself."""
        taken, self._records = self._records, []
        return taken

    # -- written at once (a run's start and end) -------------------------------------------
    async def write_now(self, entry: JournalEntry) -> None:
        """Write ``entry`` now, not batched (when recording)."""
        if self.recording:
            await self._transport.store.write_journal([entry])

    async def save_run(self, info: RunInfo) -> None:
        """Store a run's header (name, status, times, meta)."""
        await self._transport.store.save_run(info)

    async def stored_run(self, run_id: str) -> RunInfo | None:
        """The run's header as stored (another process may have changed it)."""
        return await self._transport.store.get_run(run_id)

    async def events_stored(self, run_id: str) -> int:
        """How many events of the run the store has counted so far."""
        stored = await self.stored_run(run_id)
        return stored.events if stored is not None else 0

    def _kick(self) -> None:
        # Called for every record and ack: skip the Event calls when nothing changes.
        if self._idle.is_set():
            self._idle.clear()
        if not self._wake.is_set():
            self._wake.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            acks, records, marks = self._acks, self._records, self._marks
            self._acks, self._records, self._marks = [], [], []
            if not (acks or records or marks):
                self._idle.set()
                if self._closing:
                    return
                continue
            try:
                await self._transport.ack(acks, records=records, mark=marks)
                failures = 0
            except TransportError as exc:
                await self._put_back(acks, records, marks, exc)
                if self._closing:
                    return
                failures += 1
                await asyncio.sleep(_DELAYS(failures))
            except Exception as exc:  # not the store: something in the batch cannot be written
                await self._isolate(acks, records, marks, exc)
            self._wake.set()

    async def _put_back(
        self,
        acks: list[Ack],
        records: list[JournalEntry],
        marks: list[tuple[str, int]],
        exc: TransportError,
    ) -> None:
        """Queue a batch the store refused again, in front (tried again after a delay).

        An ack that never lands means a redelivery later (at-least-once), never a lost
        event.
        """
        log.warning("writing %d acks / %d records failed: %s", len(acks), len(records), exc)
        if acks and records and not isinstance(exc, TransportClosed):
            # A store out of memory refuses the records but still takes acks: ack now,
            # so handled events are not run again; the records follow.
            acks, marks = await self._ack_alone(acks, marks)
        self._acks[:0], self._records[:0], self._marks[:0] = acks, records, marks

    async def _ack_alone(
        self, acks: list[Ack], marks: list[tuple[str, int]]
    ) -> tuple[list[Ack], list[tuple[str, int]]]:
        """Write ``acks`` without their records; what is left to write."""
        try:
            await self._transport.ack(acks, mark=marks)
        except Exception:
            return acks, marks
        log.warning("wrote %d acks without their records, which follow later", len(acks))
        return [], []

    async def _isolate(
        self,
        acks: list[Ack],
        records: list[JournalEntry],
        marks: list[tuple[str, int]],
        exc: Exception,
    ) -> None:
        """Write a failed batch piece by piece, setting aside what cannot be written.

        What fails for the store's sake (a ``TransportError``) is queued again.
        """
        log.error(
            "writing %d acks / %d records failed: %s: %s; "
            "writing them one by one to set aside what cannot be written",
            len(acks),
            len(records),
            type(exc).__name__,
            exc,
        )
        retry_acks, retry_marks = await self._ack_alone(acks, marks)
        if retry_acks or retry_marks:
            retry_acks, retry_marks = [], []
            for ack in acks:
                await self._write_one(ack, retry_acks, partial(self._transport.ack, [ack]))
            for mark in marks:
                await self._write_one(
                    mark, retry_marks, partial(self._transport.ack, [], mark=[mark])
                )
        retry_records: list[JournalEntry] = []
        for entry in records:
            await self._write_one(
                entry, retry_records, partial(self._transport.store.write_journal, [entry])
            )
        self._acks[:0], self._records[:0], self._marks[:0] = retry_acks, retry_records, retry_marks

    async def _write_one(
        self, item: _T, retry: list[_T], write: Callable[[], Awaitable[None]]
    ) -> None:
        try:
            await write()
        except TransportError:
            retry.append(item)
        except Exception as exc:
            log.error(
                "set aside %r, which cannot be written: %s: %s", item, type(exc).__name__, exc
            )

    async def flush(self) -> None:
        """Wait until everything queued so far has been written (or given up on)."""
        if self._task is None or self._task.done():
            return
        self._kick()
        await self._idle.wait()
        # Written, and readable: a store may copy records to their runs in the
        # background (Redis: the relay queue); quiet and a run's end wait for that too.
        await self._transport.store.settle()

    async def aclose(self) -> None:
        """Flush, then stop the flusher."""
        if self._task is None:
            return
        self._closing = True
        self._kick()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=5.0)
        except TimeoutError:
            self._task.cancel()
        self._task = None
