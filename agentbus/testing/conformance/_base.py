"""The base of the conformance checks: the ``transport`` fixture and the clock hook."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import pytest_asyncio

from ...errors import TransportClosed
from ...transports import Delivery, JournalEntry, JournalRecord, Transport

__all__ = ["ConformanceBase"]

TOPIC = "conf.orders"
IDLE_MS = 150


class ConformanceBase:
    """Builds, opens, cleans and closes one transport per check.

    Override :meth:`make_transport`; override :meth:`age` when the transport's idle-time
    bookkeeping runs on a clock the test can move (it then needs no real waiting).
    """

    pytestmark = [pytest.mark.asyncio]

    async def make_transport(self) -> Transport:
        """A new, unconnected transport on this check's own namespace.

        Called again (once) when a check closed its transport, to clean up after it: it
        must then return a transport on the same namespace (keep the prefix on ``self``).
        """
        raise NotImplementedError("override make_transport() to return your transport")

    async def age(self, transport: Transport, seconds: float) -> None:
        """Let ``seconds`` pass for the transport's idle-time bookkeeping (real time here)."""
        await asyncio.sleep(seconds)

    @pytest_asyncio.fixture
    async def transport(self) -> AsyncIterator[Transport]:
        """An open transport; everything it stored is deleted afterwards."""
        t = await self.make_transport()
        await t.connect()
        try:
            yield t
        finally:
            try:
                await t.admin.delete_prefix()
            except TransportClosed:  # the check closed it: clean up with a fresh one
                fresh = await self.make_transport()
                await fresh.connect()
                try:
                    await fresh.admin.delete_prefix()
                finally:
                    await fresh.aclose()
            await t.aclose()


def payload(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


def numbers(deliveries: Sequence[Delivery]) -> list[int]:
    return [json.loads(d.payload or b"null")["n"] for d in deliveries]


async def publish_n(t: Transport, n: int, topic: str = TOPIC, start: int = 0) -> list[str]:
    return [await t.publish(topic, payload(i)) for i in range(start, start + n)]


async def read(
    t: Transport, consumer: str, *, group: str = "g", count: int = 100, pending: bool = False
) -> list[Delivery]:
    return await t.read_group(group, consumer, [TOPIC], count=count, block_ms=None, pending=pending)


def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


async def group_info(t: Transport, group: str, topic: str = TOPIC) -> Any:
    infos = {i.topic: i for i in await t.admin.topics()}
    return {g.name: g for g in infos[topic].groups}[group]


def letter(entry_id: str, reason: str = "handler failed") -> dict[str, Any]:
    return {
        "origin_id": entry_id,
        "reason": reason,
        "error": "RuntimeError: boom",
        "agent": "worker",
        "attempts": 3,
        "time": 1234.5,
        "payload": '{"n": 0}',
    }


def entry(run_id: str, kind: str, **fields: Any) -> JournalEntry:
    return JournalEntry(run_id, {"kind": kind, "time": 1.0, **fields})


def kinds(records: Sequence[JournalRecord]) -> list[str]:
    return [r.kind for r in records]
