"""The memory transport and Redis, driven by the same random sequence, must agree.

A hypothesis state machine publishes, reads (new and own-pending entries, as a consumer
that crashed and came back does), acknowledges, claims, dead-letters and commits
de-duplicated deliveries on both transports at once, and compares everything a user
can observe: what each read returns (payloads, delivery counts), what each claim
takes, the topics' lengths, groups, pending counts and lag, and the dead letters.
Entry ids differ between the two (they are clocks), so entries are matched by payload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from agentbus import MemoryTransport
from agentbus.testing import unique_prefix
from agentbus.testing.redis_server import RedisServer
from agentbus.transports import Ack, Delivery, Transport
from agentbus.transports.redis import RedisStreamsTransport

pytestmark = [pytest.mark.redis]

TOPICS = ("alpha", "beta")
CONSUMERS = ("c1", "c2", "c3")
GROUP = "g"


def _seen(deliveries: list[Delivery]) -> list[tuple[str, bytes | None, int]]:
    return [(d.topic, d.payload, d.delivery_count) for d in deliveries]


class TransportsAgree(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.memory = MemoryTransport()
        self.redis = RedisStreamsTransport(self.url, prefix=unique_prefix("stateful"))
        self.both: tuple[Transport, Transport] = (self.memory, self.redis)
        self.ids: dict[bytes, tuple[str, str]] = {}  # payload -> (memory id, redis id)
        self.topic_of: dict[bytes, str] = {}
        self.pending: set[bytes] = set()  # delivered to someone, not yet acknowledged
        self.counter = 0
        self.run(self.redis.connect())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def on_both(self, op: Any) -> tuple[Any, Any]:
        return self.run(op(self.memory, 0)), self.run(op(self.redis, 1))

    def teardown(self) -> None:
        try:
            self.run(self.redis.admin.delete_prefix())
        finally:
            self.run(self.redis.aclose())
            self.run(self.memory.aclose())
            self.loop.close()

    def _track(self, deliveries: tuple[list[Delivery], list[Delivery]]) -> None:
        for d in deliveries[0]:
            assert d.payload is not None
            self.pending.add(d.payload)

    # -- rules ---------------------------------------------------------------------------------
    @initialize(from_start=st.booleans())
    def create_groups(self, from_start: bool) -> None:
        for topic in TOPICS:
            self.on_both(
                lambda t, _, topic=topic: t.create_group(topic, GROUP, from_start=from_start)
            )

    @rule(topic=st.sampled_from(TOPICS), n=st.integers(min_value=1, max_value=3))
    def publish(self, topic: str, n: int) -> None:
        for _ in range(n):
            self.counter += 1
            payload = f"event-{self.counter}".encode()
            ids = self.on_both(lambda t, _, p=payload: t.publish(topic, p))
            self.ids[payload] = ids
            self.topic_of[payload] = topic

    @rule(consumer=st.sampled_from(CONSUMERS), count=st.integers(min_value=1, max_value=4))
    def read_new(self, consumer: str, count: int) -> None:
        got = self.on_both(
            lambda t, _: t.read_group(GROUP, consumer, TOPICS, count=count, block_ms=None)
        )
        assert _seen(got[0]) == _seen(got[1])
        self._track(got)

    @rule(consumer=st.sampled_from(CONSUMERS), count=st.integers(min_value=1, max_value=6))
    def crash_and_resume(self, consumer: str, count: int) -> None:
        """A consumer restarts and first re-reads its own unacknowledged entries."""
        got = self.on_both(
            lambda t, _: t.read_group(
                GROUP, consumer, TOPICS, count=count, block_ms=None, pending=True
            )
        )
        assert _seen(got[0]) == _seen(got[1])

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.pending)), min_size=1, max_size=3))
        self.on_both(
            lambda t, i: t.ack([Ack(self.topic_of[p], GROUP, self.ids[p][i]) for p in chosen])
        )
        self.pending -= set(chosen)

    @rule(consumer=st.sampled_from(CONSUMERS), topic=st.sampled_from(TOPICS))
    def claim(self, consumer: str, topic: str) -> None:
        """Another consumer takes over everything pending (idle time 0: no clocks involved)."""
        got = self.on_both(
            lambda t, _: t.claim_idle(topic, GROUP, consumer, min_idle_ms=0, count=100)
        )
        assert got[0][0] == got[1][0] == "0-0"  # everything fitted in one scan
        assert sorted(_seen(got[0][1])) == sorted(_seen(got[1][1]))

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def dead_letter(self, data: st.DataObject) -> None:
        payload = data.draw(st.sampled_from(sorted(self.pending)))
        topic = self.topic_of[payload]
        letter = {"origin_id": "-", "reason": "test", "error": payload.decode(), "attempts": 1}
        self.on_both(lambda t, i: t.dead_letter(topic, GROUP, self.ids[payload][i], letter))
        self.pending.discard(payload)

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data(), repeat=st.booleans())
    def commit(self, data: st.DataObject, repeat: bool) -> None:
        """Finish a de-duplicated delivery; committing it twice writes its effects once."""
        payload = data.draw(st.sampled_from(sorted(self.pending)))
        topic = self.topic_of[payload]
        mark = (self.redis.keys.dedup("t", "agent", payload.decode()), 60)
        effect = [("effects", b"effect-of-" + payload)]
        for _ in range(2 if repeat else 1):
            fresh = self.on_both(
                lambda t, i: t.commit(Ack(topic, GROUP, self.ids[payload][i]), mark, publish=effect)
            )
            assert fresh[0] == fresh[1]
        self.pending.discard(payload)

    # -- what must always agree ----------------------------------------------------------------
    @invariant()
    def topics_agree(self) -> None:
        def view(infos: Any) -> list[Any]:
            return [
                (i.topic, i.length, i.dead_letters, [(g.name, g.pending, g.lag) for g in i.groups])
                for i in infos
            ]

        memory, redis = self.on_both(lambda t, _: t.admin.topics())
        assert view(memory) == view(redis)

    @invariant()
    def dead_letters_and_effects_agree(self) -> None:
        for topic in TOPICS:
            memory, redis = self.on_both(lambda t, _, topic=topic: t.admin.dead_letters(topic))
            assert [d.error for d in memory] == [d.error for d in redis]
        memory, redis = self.on_both(
            lambda t, _: t.read_tail("effects", "0-0", count=1000, block_ms=None)
        )
        assert [d.payload for d in memory] == [d.payload for d in redis]
        assert len({d.payload for d in memory}) == len(memory)  # every effect once


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(directory=tmp_path_factory.mktemp("redis")) as s:
        yield s


def test_memory_and_redis_transports_agree(server: RedisServer) -> None:
    TransportsAgree.url = server.url
    run_state_machine_as_test(
        TransportsAgree,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
