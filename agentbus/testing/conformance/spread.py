"""Conformance checks of broker calls over several topics.

On Redis Cluster two topics usually live in different hash slots, often on different
masters, so these are the calls a transport cannot make as one command there: a read
over several topics, a de-duplicated commit whose outputs go to other topics, records
written with acks of several topics. Every transport must behave the same.
"""

from __future__ import annotations

import asyncio
import time

from ...transports import Ack, RunInfo, Transport
from ._base import TOPIC, ConformanceBase, entry, group_info, kinds, numbers, payload

__all__ = ["SpreadChecks"]

TOPICS = [TOPIC, "conf.second", "conf.third"]


class SpreadChecks(ConformanceBase):
    """Reads, commits and acks over several topics."""

    async def test_a_blocking_read_over_topics_wakes_on_each_and_loses_nothing(
        self, transport: Transport
    ) -> None:
        for t in TOPICS:
            await transport.create_group(t, "g")
        seen: list[int] = []

        async def read(block_ms: int = 5000) -> list[int]:
            got = await transport.read_group("g", "c1", TOPICS, count=10, block_ms=block_ms)
            await transport.ack([Ack(d.topic, "g", d.entry_id) for d in got])
            return numbers(got)

        for n, topic in enumerate([TOPICS[2], TOPICS[0], TOPICS[1], TOPICS[2]]):
            reader = asyncio.create_task(read())
            await asyncio.sleep(0.05)  # let it block first
            started = time.monotonic()
            await transport.publish(topic, payload(n))
            seen.extend(await asyncio.wait_for(reader, 3))
            assert time.monotonic() - started < 1, f"the read over {TOPICS} was late"
        for _ in range(3):  # reads still in flight deliver on the next calls
            seen.extend(await read(block_ms=100))
        assert sorted(seen) == [0, 1, 2, 3]
        for t in TOPICS:
            assert (await group_info(transport, "g", t)).pending == 0

    async def test_commit_writes_outputs_on_other_topics_once(self, transport: Transport) -> None:
        await transport.store.save_run(RunInfo("run-c", "commit", started=1.0))
        out = TOPICS[1]
        await transport.create_group(TOPIC, "g")
        await transport.create_group(out, "o")
        await transport.publish(TOPIC, payload(1))
        (d,) = await transport.read_group("g", "c1", [TOPIC], count=10, block_ms=None)
        marker = (transport.keys.dedup(TOPIC, "worker", "E1"), 60)
        records = [entry("run-c", "published"), entry("run-c", "handled")]

        first = await transport.commit(
            Ack(TOPIC, "g", d.entry_id), marker, publish=[(out, payload(2))], records=records
        )
        again = await transport.commit(
            Ack(TOPIC, "g", d.entry_id), marker, publish=[(out, payload(2))], records=records
        )

        assert (first, again) == (True, False)
        # The outputs reach their topic with the relay (the journal's settle waits for it).
        await transport.store.settle()
        got = await transport.read_group("o", "c1", [out], count=10, block_ms=None)
        assert numbers(got) == [2]
        assert kinds(await transport.store.read_journal("run-c")) == ["published", "handled"]
        assert (await group_info(transport, "g")).pending == 0
        run = await transport.store.get_run("run-c")
        assert run is not None
        assert (run.events, run.records) == (1, 2)
        assert await transport.store.relay_pending(older_than=0.0) == 0

    async def test_records_with_acks_of_several_topics_are_written_once(
        self, transport: Transport
    ) -> None:
        for t in TOPICS:
            await transport.create_group(t, "g")
            await transport.publish(t, payload(0))
        got = await transport.read_group("g", "c1", TOPICS, count=10, block_ms=None)
        while len(got) < len(TOPICS):  # a transport may read topic by topic
            more = await transport.read_group("g", "c1", TOPICS, count=10, block_ms=100)
            got.extend(more)
        assert len(got) == len(TOPICS)

        await transport.ack(
            [Ack(d.topic, "g", d.entry_id) for d in got],
            records=[entry("run-a", "handled", n=n) for n in range(len(got))],
        )

        records = await transport.store.read_journal("run-a")
        assert [r.record["n"] for r in records] == [0, 1, 2]
        for t in TOPICS:
            assert (await group_info(transport, "g", t)).pending == 0
