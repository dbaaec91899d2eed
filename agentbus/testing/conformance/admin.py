"""Conformance checks of the :class:`~agentbus.transports.Admin` role.

Trimming what every group has acknowledged, removing idle consumers, pruning old runs
and journals of runs never saved (the store's part of retention), re-publishing dead
letters and deleting everything; presence in :mod:`.presence`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from ...transports import Ack, Delivery, JournalEntry, RunInfo, Transport
from .presence import PresenceChecks

__all__ = ["AdminChecks"]

TOPIC = "ret.orders"
IDLE_MS = 150


def payload(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


def numbers(deliveries: Sequence[Delivery]) -> list[int]:
    return [json.loads(d.payload or b"null")["n"] for d in deliveries]


async def publish_n(t: Transport, n: int, start: int = 0) -> list[str]:
    return [await t.publish(TOPIC, payload(i)) for i in range(start, start + n)]


async def read(t: Transport, group: str, consumer: str, count: int = 100) -> list[Delivery]:
    return await t.read_group(group, consumer, [TOPIC], count=count, block_ms=None)


async def ack(t: Transport, group: str, deliveries: Sequence[Delivery]) -> None:
    await t.ack([Ack(TOPIC, group, d.entry_id) for d in deliveries])


async def length(t: Transport, topic: str = TOPIC) -> int:
    return {i.topic: i for i in await t.admin.topics()}[topic].length


async def consumers(t: Transport, group: str) -> int:
    info = {i.topic: i for i in await t.admin.topics()}[TOPIC]
    return {g.name: g for g in info.groups}[group].consumers


def note(run_id: str, kind: str) -> JournalEntry:
    return JournalEntry(run_id, {"kind": kind, "time": time.time()})


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


class AdminChecks(PresenceChecks):
    """Retention, dead-letter retry, deletion, and presence (:class:`PresenceChecks`)."""

    async def test_trim_keeps_what_any_group_has_pending_or_not_yet_received(
        self, transport: Transport
    ) -> None:
        await transport.create_group(TOPIC, "fast")
        await transport.create_group(TOPIC, "slow")
        await publish_n(transport, 10)
        fast = await read(transport, "fast", "c1")
        await ack(transport, "fast", fast[:6])  # 6..9 pending
        slow = await read(transport, "slow", "c2", count=4)
        await ack(transport, "slow", slow)  # 4..9 not delivered yet

        assert await transport.admin.trim_acknowledged(TOPIC) == 4  # 0..3: acked by both
        assert await length(transport) == 6

        # Nothing either group still needs went: the slow group reads the rest, the fast
        # one still has its pending entries (a restarted consumer re-reads them).
        rest = await read(transport, "slow", "c2")
        assert numbers(rest) == [4, 5, 6, 7, 8, 9]
        again = await transport.read_group(
            "fast", "c1", [TOPIC], count=100, block_ms=None, pending=True
        )
        assert numbers(again) == [6, 7, 8, 9]
        # The slow group now has 4..9 pending: still nothing more to trim.
        assert await transport.admin.trim_acknowledged(TOPIC) == 0

        await ack(transport, "fast", again)
        assert await transport.admin.trim_acknowledged(TOPIC) == 0  # the slow group holds 4..9
        await ack(transport, "slow", rest)
        assert await transport.admin.trim_acknowledged(TOPIC) == 6
        assert await length(transport) == 0

    async def test_unprocessed_events_are_never_trimmed(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "absent")  # a group whose workers are all down
        await publish_n(transport, 300)

        assert await transport.admin.trim_acknowledged(TOPIC) == 0
        assert await length(transport) == 300
        assert len(await read(transport, "absent", "late", count=1000)) == 300

    async def test_trimmed_topic_keeps_numbering_and_serves_new_entries(
        self, transport: Transport
    ) -> None:
        await transport.create_group(TOPIC, "g")
        old = await publish_n(transport, 3)
        await ack(transport, "g", await read(transport, "g", "c"))
        assert await transport.admin.trim_acknowledged(TOPIC) == 3

        new = await publish_n(transport, 2, start=3)

        assert _key(new[0]) > _key(old[-1])
        assert numbers(await read(transport, "g", "c")) == [3, 4]

    async def test_topic_without_groups_is_trimmed_only_up_to_its_reader(
        self, transport: Transport
    ) -> None:
        ids = await publish_n(transport, 5)

        # No group: a shared group created later starts from the beginning and wants them.
        assert await transport.admin.trim_acknowledged(TOPIC) == 0
        assert await length(transport) == 5
        # A groupless reader (a reply inbox) that has read up to ids[2].
        assert await transport.admin.trim_acknowledged(TOPIC, consumed=ids[2]) == 3
        assert numbers(await transport.read_tail(TOPIC, "0-0", count=10, block_ms=None)) == [3, 4]
        assert await transport.admin.trim_acknowledged("ret.nothing") == 0

    async def test_group_created_from_start_after_a_trim_gets_what_is_left(
        self, transport: Transport
    ) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 4)
        await ack(transport, "g", await read(transport, "g", "c", count=2))
        assert await transport.admin.trim_acknowledged(TOPIC) == 2

        await transport.create_group(TOPIC, "newcomer", from_start=True)

        assert numbers(await read(transport, "newcomer", "n")) == [2, 3]

    async def test_idle_consumers_without_pending_entries_are_removed(
        self, transport: Transport
    ) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 4)
        await ack(transport, "g", await read(transport, "g", "done", count=1))
        await ack(transport, "g", await read(transport, "g", "also-done", count=1))
        await read(transport, "g", "holding", count=1)  # keeps its entry pending
        await self.age(transport, IDLE_MS / 1000 * 2)
        await read(transport, "g", "fresh", count=1)
        assert await consumers(transport, "g") == 4

        removed = await transport.admin.remove_idle_consumers(TOPIC, "g", idle_ms=IDLE_MS)

        assert removed == ["also-done", "done"]
        assert await consumers(transport, "g") == 2
        assert await transport.admin.remove_idle_consumers(TOPIC, "g", idle_ms=IDLE_MS) == []
        # The consumer holding an entry keeps it; a removed one that reads again is back.
        pending = await transport.read_group(
            "g", "holding", [TOPIC], count=10, block_ms=None, pending=True
        )
        assert numbers(pending) == [2]
        await publish_n(transport, 1, start=4)
        assert numbers(await read(transport, "g", "done")) == [4]
        assert await consumers(transport, "g") == 3
        assert await transport.admin.remove_idle_consumers(TOPIC, "missing", idle_ms=0) == []
        assert await transport.admin.remove_idle_consumers("ret.nothing", "g", idle_ms=0) == []

    async def test_a_lease_renewal_counts_as_activity(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 1)
        (d,) = await read(transport, "g", "worker")
        await self.age(transport, IDLE_MS / 1000 * 2)
        await transport.extend_lease(TOPIC, "g", "worker", [d.entry_id])
        await ack(transport, "g", [d])

        assert await transport.admin.remove_idle_consumers(TOPIC, "g", idle_ms=IDLE_MS) == []

    async def test_prune_runs_by_last_activity(self, transport: Transport) -> None:
        long_ago = time.time() - 3600
        await transport.store.save_run(RunInfo("old", "old", "completed", long_ago, long_ago + 1))
        await transport.store.write_journal([note("old", "run_started")])
        await transport.store.save_run(RunInfo("long", "long", "running", long_ago))
        await asyncio.sleep(0.05)  # the journal's clock (Redis ids are in ms) must move on
        cutoff = time.time()
        await asyncio.sleep(0.05)
        await transport.store.write_journal([note("long", "step")])  # started long ago, active now
        await transport.store.save_run(RunInfo("new", "new", "completed", time.time(), time.time()))
        await transport.store.write_journal([note("new", "run_started")])

        assert await transport.store.prune_runs(before=cutoff) == ["old"]

        assert await transport.store.get_run("old") is None
        assert await transport.store.read_journal("old") == []
        assert sorted(r.run_id for r in await transport.store.list_runs()) == ["long", "new"]
        assert [r.kind for r in await transport.store.read_journal("long")] == ["step"]
        assert await transport.store.prune_runs(before=cutoff) == []
        assert sorted(await transport.store.prune_runs(before=time.time() + 1)) == ["long", "new"]
        assert await transport.store.list_runs() == []

    async def test_journals_of_runs_never_saved_are_pruned_by_their_last_record(
        self, transport: Transport
    ) -> None:
        # ``orphans`` collects records of events without a run; like the journal of a run
        # written to after it was pruned ("late"), it is in no runs index.
        store = transport.store
        await store.write_journal([note("orphans", "delivered"), note("late", "handled")])
        await store.save_run(RunInfo("saved", "saved", "completed", time.time() - 3600))
        await asyncio.sleep(0.05)  # the journal's clock (Redis ids are in ms) must move on
        cutoff = time.time()
        await asyncio.sleep(0.05)
        await store.write_journal([note("fresh", "delivered")])

        assert sorted(await store.prune_runs(before=cutoff)) == ["late", "orphans", "saved"]

        assert await store.read_journal("orphans") == []
        assert await store.read_journal("late") == []
        assert [r.kind for r in await store.read_journal("fresh")] == ["delivered"]
        # The orphans journal is checked on every prune, keeping what is recent.
        await store.write_journal([note("orphans", "delivered")])
        assert await store.prune_runs(before=cutoff) == []
        assert [r.kind for r in await store.read_journal("orphans")] == ["delivered"]
        await asyncio.sleep(0.05)
        assert "orphans" in await store.prune_runs(before=time.time())
        assert await store.read_journal("orphans") == []

    async def test_retry_dead_letter_republishes_the_same_bytes_once(
        self, transport: Transport
    ) -> None:
        original = '{"specversion":"1.0","id":"E1","data":{"text":"caf\u00e9 \U0001f600"}}'.encode()
        await transport.create_group(TOPIC, "g")
        await transport.publish(TOPIC, original)
        (d,) = await read(transport, "g", "c")
        assert d.payload is not None
        letter: dict[str, Any] = {"origin_id": d.entry_id, "reason": "handler failed"}
        letter |= {"error": "boom", "agent": "a", "attempts": 3, "time": 1.0}
        letter["payload"] = d.payload.decode()
        await transport.dead_letter(TOPIC, "g", d.entry_id, letter)
        (dead,) = await transport.admin.dead_letters(TOPIC)
        await transport.store.save_run(RunInfo("run-r", "retry", started=1.0))

        entry_id = await transport.admin.retry_dead_letter(
            TOPIC, dead.id, records=[note("run-r", "dlq_retried")]
        )

        assert entry_id is not None
        (again,) = await read(transport, "g", "c")
        assert (again.entry_id, again.payload) == (entry_id, original)
        assert await transport.admin.dead_letters(TOPIC) == []
        assert [r.kind for r in await transport.store.read_journal("run-r")] == ["dlq_retried"]
        # A second retry of the same letter (it is gone) publishes and records nothing.
        assert (
            await transport.admin.retry_dead_letter(TOPIC, dead.id, records=[note("run-r", "x")])
            is None
        )
        assert await read(transport, "g", "c") == []
        assert [r.kind for r in await transport.store.read_journal("run-r")] == ["dlq_retried"]

    async def test_delete_prefix_deletes_everything_stored(self, transport: Transport) -> None:
        await transport.create_group(TOPIC, "g")
        await publish_n(transport, 2)
        (d, _) = await read(transport, "g", "c")
        await transport.dead_letter(TOPIC, "g", d.entry_id, {"origin_id": d.entry_id})
        await transport.store.save_run(RunInfo("run-x", "x", started=time.time()))
        await transport.store.write_journal([note("run-x", "step")])
        await transport.admin.announce("rt-x", groups=[(TOPIC, "g")], inbox=None, every_ms=1)

        assert await transport.admin.delete_prefix() > 0

        assert await transport.admin.topics() == []
        assert not await transport.admin.heartbeat("rt-x")
        assert await transport.admin.dead_letters(TOPIC) == []
        assert await transport.store.list_runs() == []
        assert await transport.store.read_journal("run-x") == []
        assert await transport.admin.delete_prefix() == 0
