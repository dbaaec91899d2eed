"""Batches acknowledgements and journal records into few round trips.

Acks and delivery records are queued and written by one flusher task. It writes as
soon as something is queued; while a write is in flight new items pile up and go out
together next time. Under load that gives large batches, at idle it adds no delay.

Journal records that must precede an event a handler publishes (its ``delivered``
record) are taken by that publish's own pipeline (:meth:`take_journal`), so a run's
log reads in causal order.

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

from ._supervise import supervise
from .errors import TransportClosed, TransportError
from .transports import Ack, JournalEntry

if TYPE_CHECKING:
    from .transports import Transport

log = logging.getLogger("agentbus.runtime")
_T = TypeVar("_T")


class Writer:
    """Queue of acks, journal entries and de-duplication marks, flushed in batches."""

    def __init__(self, transport: Transport, *, journal: bool = True) -> None:
        self._transport = transport
        #: With the journal off (``Runtime(journal=False)``) records are dropped here.
        self.journal_enabled = journal
        self._acks: list[Ack] = []
        self._journal: list[JournalEntry] = []
        self._marks: list[tuple[str, int]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = supervise(self._run, "agentbus-writer")

    def journal(self, entry: JournalEntry) -> None:
        """Queue a journal record to be written with the next batch."""
        if self.journal_enabled:
            self._journal.append(entry)
            self._kick()

    def ack(
        self,
        ack: Ack,
        journal: JournalEntry | None = None,
        mark: tuple[str, int] | None = None,
    ) -> None:
        """Queue an ack together with its outcome record and de-duplication marker."""
        self._acks.append(ack)
        if journal is not None and self.journal_enabled:
            self._journal.append(journal)
        if mark is not None:
            self._marks.append(mark)
        self._kick()

    def take_journal(self) -> list[JournalEntry]:
        """Hand the queued journal records to a caller that writes them itself."""
        taken, self._journal = self._journal, []
        return taken

    def _kick(self) -> None:
        # Called for every record and ack: skip the Event calls when nothing changes.
        if self._idle.is_set():
            self._idle.clear()
        if not self._wake.is_set():
            self._wake.set()

    async def _run(self) -> None:
        delay = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            acks, journal, marks = self._acks, self._journal, self._marks
            self._acks, self._journal, self._marks = [], [], []
            if not (acks or journal or marks):
                self._idle.set()
                if self._closing:
                    return
                continue
            try:
                await self._transport.ack(acks, journal=journal, mark=marks)
                delay = 0.05
            except TransportError as exc:
                # Put them back in front and try again: an ack that never lands means
                # a redelivery later (at-least-once), never a lost event.
                log.warning(
                    "writing %d acks / %d journal records failed: %s", len(acks), len(journal), exc
                )
                if acks and journal and not isinstance(exc, TransportClosed):
                    # A store out of memory refuses the records but still takes acks:
                    # ack now, so handled events are not run again; the records follow.
                    acks, marks = await self._ack_alone(acks, marks)
                self._acks[:0], self._journal[:0], self._marks[:0] = acks, journal, marks
                if self._closing:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception as exc:  # not the store: something in the batch cannot be written
                await self._isolate(acks, journal, marks, exc)
            self._wake.set()

    async def _ack_alone(
        self, acks: list[Ack], marks: list[tuple[str, int]]
    ) -> tuple[list[Ack], list[tuple[str, int]]]:
        """Write ``acks`` without journal records; what is left to write."""
        try:
            await self._transport.ack(acks, mark=marks)
        except Exception:
            return acks, marks
        log.warning("wrote %d acks without their journal records, which follow later", len(acks))
        return [], []

    async def _isolate(
        self,
        acks: list[Ack],
        journal: list[JournalEntry],
        marks: list[tuple[str, int]],
        exc: Exception,
    ) -> None:
        """Write a failed batch piece by piece, setting aside what cannot be written.

        What fails for the store's sake (a ``TransportError``) is queued again.
        """
        log.error(
            "writing %d acks / %d journal records failed: %s: %s; "
            "writing them one by one to set aside what cannot be written",
            len(acks),
            len(journal),
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
        retry_journal: list[JournalEntry] = []
        for entry in journal:
            await self._write_one(
                entry, retry_journal, partial(self._transport.store.write_journal, [entry])
            )
        self._acks[:0], self._journal[:0], self._marks[:0] = retry_acks, retry_journal, retry_marks

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
