"""Batches acknowledgements and journal records into few round trips.

Acks and delivery records are queued and written by one flusher task. It writes as
soon as something is queued; while a write is in flight new items pile up and go out
together next time. Under load that gives large batches, at idle it adds no delay.

Journal records that must precede an event a handler publishes (its ``delivered``
record) are taken by that publish's own pipeline (:meth:`take_journal`), so a run's
log reads in causal order.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .errors import TransportError
from .transports import Ack, JournalEntry

if TYPE_CHECKING:
    from .transports import Transport

log = logging.getLogger("agentbus.runtime")


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
        self._task = asyncio.create_task(self._run(), name="agentbus-writer")

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
                self._acks[:0], self._journal[:0], self._marks[:0] = acks, journal, marks
                if self._closing:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            self._wake.set()

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
