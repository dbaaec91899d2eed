"""The group commit of the Redis transport's publishes, split by hash slot.

A round trip costs far more than the commands in it, so publishes made while another
is being written wait and go out together in the next batch. A batch is one script call
per hash slot of its topics (a cluster runs a script on one slot), all in one pipeline:
one round trip on a single Redis, one per master on a cluster. Each call writes its
events and, in the same atomic step, their journal records into the outbox of its first
topic; the relay queue copies the records to their runs in the background
(:mod:`.redis_relay`). Each caller sees only its own errors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import TransportClosed
from .base import JournalEntry
from .redis_journal import PUBLISH, publish_args
from .redis_outbox import OutboxEntry, Script, run_scripts

if TYPE_CHECKING:
    from .redis_client import RedisClient
    from .redis_journal import RedisJournalStore

__all__ = ["GroupCommit"]

log = logging.getLogger("agentbus.runtime")

#: Test-only fault injection: ``AGENTBUS_FAULT=after-outbox`` makes a process SIGKILL
#: itself right after a publish's events and outbox entry were written, before the
#: relay (the crash test of the journal's repair). Read once, used in one place.
_FAULT = os.environ.get("AGENTBUS_FAULT", "")


@dataclass(slots=True)
class _Publish:
    """A publish waiting for its group commit."""

    items: Sequence[tuple[str, bytes]]
    records: Sequence[JournalEntry]
    done: asyncio.Future[list[str]]


@dataclass(slots=True)
class _SlotGroup:
    """The publishes of a batch whose topics share a hash slot: one script call."""

    topic: str
    items: list[tuple[str, bytes]] = field(default_factory=list)
    records: list[JournalEntry] = field(default_factory=list)
    outbox: OutboxEntry | None = None
    ids: list[str] = field(default_factory=list)
    error: Exception | None = None


class GroupCommit:
    """Publishes of one transport, written in batches (see the module docstring)."""

    def __init__(
        self,
        client: RedisClient,
        store: RedisJournalStore,
        slot: Callable[[str], int],
    ) -> None:
        self._c = client
        self.keys = client.keys
        self.store = store
        self._relay = store.relay
        self._relay_queue = store.relay_queue
        self._slot = slot
        self._queued: list[_Publish] = []
        self._writing: asyncio.Task[None] | None = None

    async def publish_many(
        self, items: Sequence[tuple[str, bytes]], records: Sequence[JournalEntry]
    ) -> list[str]:
        """Write ``items`` with ``records`` in the next batch; their entry ids."""
        # Group commit: a round trip costs far more than the commands in it, so publishes
        # made while another is being written wait and go out together in the next
        # MULTI/EXEC. A lone publisher is written at once; each publish still lands with
        # its journal records, and each caller sees only its own errors.
        self._c.check()
        pending = _Publish(items, records, asyncio.get_running_loop().create_future())
        self._queued.append(pending)
        if self._writing is None:
            self._writing = asyncio.get_running_loop().create_task(self._write_queued())
        return await pending.done

    async def _write_queued(self) -> None:
        batch: list[_Publish] = []
        try:
            while self._queued:
                # Publishes whose caller was cancelled before they were sent are dropped.
                batch = [p for p in self._queued if not p.done.done()]
                self._queued = []
                await self._write_batch(batch)
                batch = []
        except BaseException:  # cancelled with the loop: fail the waiters, never hang them
            closed = TransportClosed(f"the Redis transport for {self._c.url!r} stopped publishing")
            for p in batch + self._queued:
                if not p.done.done():
                    p.done.set_exception(closed)
            self._queued = []
            raise
        finally:
            self._writing = None

    async def _write_batch(self, batch: list[_Publish]) -> None:
        """Write ``batch`` (events and, with them, their records in an outbox), settle its
        publishes and hand the outbox entries to the relay queue."""
        # One script call per hash slot (a cluster runs a script on one slot), all in one
        # pipeline: one round trip on a single Redis, one per master on a cluster. Each
        # call writes its events and, in the same step, their records into the outbox of
        # its first topic. The publishes return then: their records are stored with their
        # events (a crash leaves them to the repair); the copy to the runs is the relay
        # queue's, in the background, many entries per round trip. Outbox entries already
        # copied are deleted in this pipeline.
        if self._relay_queue.events_pending:  # a commit's outputs go first (redis_relay)
            await self._relay_queue.settle_events()
        groups: dict[int, _SlotGroup] = {}
        placed: list[list[tuple[_SlotGroup, int]]] = []
        unlinks = self._relay.take_unlinks()
        try:
            self._c.check()
            direct: list[JournalEntry] = []
            for p in batch:
                where: list[tuple[_SlotGroup, int]] = []
                for topic, payload in p.items:
                    slot = self._slot(topic)
                    g = groups.get(slot)
                    if g is None:
                        g = groups[slot] = _SlotGroup(topic)
                    where.append((g, len(g.items)))
                    g.items.append((topic, payload))
                placed.append(where)
                # A call's records go with its (first) topic; a call is one topic in practice.
                if where:
                    where[0][0].records.extend(p.records)
                else:
                    direct.extend(p.records)
            calls: list[tuple[Script, Sequence[Any], Sequence[Any]]] = []
            for g in groups.values():
                g.outbox = self.store.outbox(g.topic, g.records)
                keys, args = publish_args(self.keys, g.items, g.outbox)
                calls.append((PUBLISH, keys, args))
            results = await run_scripts(self._c, calls, unlinks)
            if direct:
                await self.store.write_journal(direct)
        except Exception as exc:
            self._relay.restore(unlinks)
            error = self._c.translate(exc) if isinstance(exc, self._c.redis_error) else exc
            if self._c.closed and not isinstance(error, TransportClosed):
                error = TransportClosed(f"the Redis transport for {self._c.url!r} is closed")
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(error)
            return
        relay: list[OutboxEntry] = []
        for g, result in zip(groups.values(), results, strict=True):
            if isinstance(result, Exception):
                g.error = (
                    self._c.translate(result) if isinstance(result, self._c.redis_error) else result
                )
                continue
            lines = result.split(b"\n")
            g.ids = [r.decode() for r in lines[: len(g.items)]]
            if g.outbox is not None:
                g.outbox.id = lines[len(g.items)].decode()
                relay.append(g.outbox)
        if relay:
            if _FAULT == "after-outbox":  # test-only: see _FAULT
                os.kill(os.getpid(), signal.SIGKILL)
            self._relay_queue.submit(relay)
        self._settle_all(list(zip(batch, placed, strict=True)))

    def _settle_all(self, written: list[tuple[_Publish, list[tuple[_SlotGroup, int]]]]) -> None:
        for p, where in written:
            if not p.done.done():
                self._settle(p, where)

    def _settle(self, p: _Publish, where: list[tuple[_SlotGroup, int]]) -> None:
        """Resolve one publish from its slot groups' replies (its own errors only)."""
        ids: list[str] = []
        for g, i in where:
            if g.error is not None:
                p.done.set_exception(g.error)
                return
            r = g.ids[i]
            if r.startswith("!"):  # OOM, NOREPLICAS, READONLY: retryable
                p.done.set_exception(self._c.refused(r[1:]))
                return
            ids.append(r)
        p.done.set_result(ids)
