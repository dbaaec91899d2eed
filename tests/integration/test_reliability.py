"""Faults survived, nothing lost: worker crashes, Redis restarts, poison, long handlers.

Every test starts its own ``redis-server`` (free loopback port, temp dir) so it can
crash and restart it; workers are real ``agentbus worker`` subprocesses.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentbus import (
    Agent,
    Context,
    Envelope,
    Message,
    Runtime,
    TransportUnavailable,
    handle,
)
from agentbus.testing import wait_for
from agentbus.testing.redis_server import RedisServer, free_port
from agentbus.testing.workers import WorkerProcesses
from agentbus.transports import Transport

pytestmark = [pytest.mark.redis]

APP_FILE = Path(__file__).with_name("reliability_app.py")
APP = f"{APP_FILE}:app"
_spec = importlib.util.spec_from_file_location("reliability_app", APP_FILE)
assert _spec is not None
assert _spec.loader is not None
rel_app = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rel_app)
Item = rel_app.Item
Handled = rel_app.Handled


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with AOF fsynced on every write (survives a crash)."""
    with RedisServer(directory=tmp_path / "redis", appendonly=True, appendfsync="always") as s:
        yield s


@pytest.fixture
def fast_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server without persistence, for tests where only workers crash."""
    with RedisServer(directory=tmp_path / "redis") as s:
        yield s


@pytest.fixture
def workers(fast_server: RedisServer) -> Iterator[WorkerProcesses]:
    with WorkerProcesses(fast_server.url + "?prefix=rel:", APP) as w:
        yield w


async def _outputs(transport: Transport, topic: str) -> list[Any]:
    entries = await transport.read_tail(topic, "0-0", count=1_000_000, block_ms=None)
    return [Handled.model_validate(Envelope.decode(d.payload or b"").data) for d in entries]


async def _publish_all(rt: Runtime, topic: str, items: list[Message]) -> None:
    for start in range(0, len(items), 250):
        chunk = items[start : start + 250]
        await asyncio.gather(*(rt.publish(topic, m) for m in chunk))


async def _group(transport: Transport, topic: str, group: str) -> Any:
    for info in await transport.admin.topics():
        if info.topic == topic:
            return next(g for g in info.groups if g.name == group)
    raise AssertionError(f"no topic {topic!r}")


# -- worker crash ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("topic", "out", "group"),
    [("rel.once", "rel.once.out", "rel-once"), ("rel.items", "rel.handled", "rel-crunch")],
    ids=["dedupe", "at-least-once"],
)
async def test_sigkilled_workers_lose_nothing(
    workers: WorkerProcesses, topic: str, out: str, group: str
) -> None:
    total = 5000
    opts = ("--visibility-timeout", "1.0", "--concurrency", "16")
    workers.start(consumer="w1", extra=opts)
    workers.start(consumer="w2", extra=opts)
    async with Runtime(workers.url) as rt:
        async with rt.run("crash-loop"):
            await _publish_all(rt, topic, [Item(n=n, sleep=0.002) for n in range(total)])
        kills = 0
        for round_ in range(4):
            # Let some work happen, then kill a worker in the middle of it.
            floor = (round_ + 1) * total // 6

            async def progressed(floor: int = floor) -> bool:
                return len(await _outputs(rt.transport, out)) >= floor

            await wait_for(progressed, timeout=30, interval=0.1, message=f"{floor} outputs")
            victim = "w1" if round_ % 2 == 0 else "w2"
            workers.kill(victim)
            kills += 1
            # Half the time the replacement has the victim's name (it resumes its own
            # pending entries at once); otherwise the survivor claims them when idle.
            workers.start(consumer=victim if round_ < 2 else f"{victim}-{round_}", extra=opts)

        async def all_handled() -> bool:
            return {h.n for h in await _outputs(rt.transport, out)} == set(range(total))

        await wait_for(all_handled, timeout=60, interval=0.1, message=f"all {total} handled")

        async def drained() -> bool:
            g = await _group(rt.transport, topic, group)
            return bool(g.pending == 0 and g.lag == 0)

        await wait_for(drained, timeout=30, message="nothing pending")
        outputs = await _outputs(rt.transport, out)
        counts = Counter(h.n for h in outputs)
        assert set(counts) == set(range(total)), "some messages were lost"
        assert kills == 4
        if topic == "rel.once":
            twice = {n: c for n, c in counts.items() if c > 1}
            assert not twice, f"de-duplicated effects happened twice: {twice}"
        assert await rt.transport.admin.dead_letters(topic) == []


# -- Redis restarts ------------------------------------------------------------------------------
class Ping(Message, type="rel.Ping"):
    n: int


class Pong(Message, type="rel.Pong"):
    n: int


class Echo(Agent, name="rel-echo"):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    @handle("rel.pings", output="rel.pongs")
    async def on_ping(self, ping: Ping, ctx: Context) -> Pong:
        self.seen.append(ping.n)
        return Pong(n=ping.n)


async def _pongs(transport: Transport) -> set[int]:
    entries = await transport.read_tail("rel.pongs", "0-0", count=1_000_000, block_ms=None)
    return {int(Envelope.decode(d.payload or b"").data["n"]) for d in entries}


async def _publish_through_outage(
    rt: Runtime, count: int, confirmed: dict[int, str], stop: asyncio.Event
) -> None:
    """Publish ``count`` pings, retrying each until its publish returns (id recorded)."""
    for n in range(count):
        while True:
            try:
                confirmed[n] = await rt.publish("rel.pings", Ping(n=n))
                break
            except TransportUnavailable:
                await asyncio.sleep(0.05)
        if stop.is_set():
            return
        await asyncio.sleep(0.002)


@pytest.mark.slow
async def test_redis_crash_and_restart_loses_no_confirmed_publish(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentbus")
    echo = Echo()
    async with Runtime(server.url + "?prefix=rel:", visibility_timeout=2.0) as rt:
        rt.add(echo)
        confirmed: dict[int, str] = {}
        stop = asyncio.Event()
        async with rt.run("restart"):
            publisher = asyncio.create_task(_publish_through_outage(rt, 600, confirmed, stop))
            await wait_for(lambda: len(confirmed) >= 100, timeout=30, message="100 publishes")
            server.kill()  # a crash: only what was fsynced survives (appendfsync always)
            crashed_at = len(confirmed)
            await asyncio.sleep(1.0)  # the runtime is without Redis for a while
            server.start()
            await asyncio.wait_for(publisher, timeout=60)
        assert crashed_at < 600, "the crash should happen mid-stream"

        async def all_answered() -> bool:
            return await _pongs(rt.transport) >= set(confirmed)

        await wait_for(all_answered, timeout=30, interval=0.1, message="every ping answered")
        # Every publish that returned is in the topic after the crash, and was handled.
        stored = await rt.transport.read_tail("rel.pings", "0-0", count=100_000, block_ms=None)
        stored_ids = {Envelope.decode(d.payload or b"").id for d in stored}
        assert set(confirmed.values()) <= stored_ids
        assert set(echo.seen) >= set(confirmed)
        assert await rt.transport.admin.dead_letters("rel.pings") == []
    noticed = [r for r in caplog.records if "cannot reach Redis" in r.getMessage()]
    assert noticed, "the runtime should log that Redis went away"


async def test_groups_lost_with_the_data_are_recreated_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentbus")
    # No persistence: a restart comes back empty, so the consumer group is gone (NOGROUP).
    with RedisServer(directory=tmp_path / "redis") as server:
        echo = Echo()
        async with Runtime(server.url + "?prefix=rel:", block_ms=200) as rt:
            rt.add(echo)
            async with rt.run("before"):
                await rt.publish("rel.pings", Ping(n=1))
            await wait_for(lambda: echo.seen == [1], message="the first ping handled")
            # Its output and ack written too: a stop while the handler's publish is in
            # flight would (rightly, at-least-once) run the handler again after the outage.
            await rt.idle()
            server.stop()
            server.wipe()
            server.start()
            await wait_for(
                lambda: any("vanished" in r.getMessage() for r in caplog.records),
                timeout=20,
                message="a warning that the group vanished",
            )
            async with rt.run("after"):
                await rt.publish("rel.pings", Ping(n=2))
            await wait_for(lambda: echo.seen == [1, 2], timeout=20, message="the second ping")
            # The group was recreated once, not in a hot loop.
            await asyncio.sleep(1.0)
            vanished = [r for r in caplog.records if "vanished" in r.getMessage()]
            assert 1 <= len(vanished) <= 3, [r.getMessage() for r in vanished]
            assert all(r.levelno == logging.WARNING for r in vanished)


async def test_unreachable_redis_at_start_fails_clearly_after_a_bounded_wait() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(TransportUnavailable) as info:
        async with Runtime(url):
            pass
    elapsed = time.monotonic() - started
    assert url in str(info.value)
    assert "cannot reach Redis" in str(info.value)
    assert 1.0 < elapsed < 15.0  # it waited (bounded by connect_timeout), then gave up


def test_worker_with_unreachable_redis_exits_with_an_error_naming_the_url() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "agentbus", "worker", APP, "--url", url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert url in proc.stderr
    assert "cannot reach Redis" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 30


# -- poison messages ----------------------------------------------------------------------------------
class Picky(Agent, name="rel-picky"):
    def __init__(self) -> None:
        super().__init__()
        self.poisoned = True
        self.handled: list[int] = []
        self.tries: Counter[int] = Counter()

    @handle("rel.picky")
    async def on_ping(self, ping: Ping, ctx: Context) -> None:
        self.tries[ping.n] += 1
        if ping.n == 13 and self.poisoned:
            raise ValueError(f"cannot digest {ping.n}")
        self.handled.append(ping.n)


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args, "--url", url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip


async def test_poison_message_is_dead_lettered_while_others_flow(
    fast_server: RedisServer,
) -> None:
    import json

    url = fast_server.url + "?prefix=rel:"
    picky = Picky()
    async with Runtime(url, max_attempts=3, retry_backoff=(0.01, 0.05)) as rt:
        rt.add(picky)
        async with rt.run("poison"):
            for n in range(30):
                await rt.publish("rel.picky", Ping(n=n))

        async def settled() -> bool:
            return len(picky.handled) == 29 and bool(
                await rt.transport.admin.dead_letters("rel.picky")
            )

        await wait_for(settled, timeout=20, message="29 handled and one dead letter")
        assert 13 not in picky.handled
        assert picky.tries[13] == 3
        [letter] = await rt.transport.admin.dead_letters("rel.picky")
        assert (letter.reason, letter.attempts, letter.agent) == ("handler failed", 3, "rel-picky")
        assert "ValueError: cannot digest 13" in letter.error

        # The operator's view and tools: list, show, retry (after a fix), purge.
        listed = json.loads(_cli(url, "dlq", "list", "rel.picky", "--json").stdout)
        assert [d["origin_id"] for d in listed] == [letter.origin_id]
        assert "handler failed" in _cli(url, "dlq", "list", "rel.picky").stdout
        shown = json.loads(_cli(url, "dlq", "show", "rel.picky", letter.id).stdout)
        assert json.loads(shown[0]["payload"])["data"] == {"n": 13}
        picky.poisoned = False
        assert "re-published 1" in _cli(url, "dlq", "retry", "rel.picky").stdout
        await wait_for(lambda: 13 in picky.handled, message="the retried poison handled")
        assert await rt.transport.admin.dead_letters("rel.picky") == []

        picky.poisoned = True
        await rt.publish("rel.picky", Ping(n=13))
        await wait_for(
            lambda: picky.tries[13] == 7, timeout=10, message="the poison tried 3 more times"
        )

        async def dead_again() -> bool:
            return len(await rt.transport.admin.dead_letters("rel.picky")) == 1

        await wait_for(dead_again, message="dead-lettered again")
        assert "purged 1" in _cli(url, "dlq", "purge", "rel.picky").stdout
        assert await rt.transport.admin.dead_letters("rel.picky") == []


# -- long handlers ----------------------------------------------------------------------------------
class Slow(Agent, name="rel-slow"):
    calls: Counter[int] = Counter()

    @handle("rel.slow")
    async def on_ping(self, ping: Ping, ctx: Context) -> None:
        Slow.calls[ping.n] += 1
        await asyncio.sleep(2.0)  # four visibility timeouts


@pytest.mark.parametrize("where", ["memory", "redis"])
async def test_long_handler_keeps_its_lease_and_runs_once(where: str, tmp_path: Path) -> None:
    from agentbus import MemoryTransport

    Slow.calls.clear()
    with RedisServer(directory=tmp_path / "redis") as server:
        shared = MemoryTransport() if where == "memory" else None
        url = None if where == "memory" else server.url + "?prefix=rel:"
        opts: dict[str, Any] = {"visibility_timeout": 0.5, "block_ms": 100}
        async with (
            Runtime(url, transport=shared, **opts) as a,
            Runtime(url, transport=shared, **opts) as b,
        ):
            a.add(Slow())
            await asyncio.sleep(0.2)
            async with a.run("slow") as run:
                await a.publish("rel.slow", Ping(n=1))
                await wait_for(lambda: Slow.calls[1] == 1, message="the handler started")
                b.add(Slow())  # an idle replica that claims whatever looks abandoned
                await a.idle(timeout=10)
                await b.idle(timeout=10)
            assert Slow.calls == Counter({1: 1})
            records = await a.journal.records(run.run_id)
            assert [r.record["attempt"] for r in records if r.kind == "delivered"] == [1]
            assert [r.kind for r in records if r.kind == "handled"] == ["handled"]
        if shared is not None:  # a transport passed in is the caller's to close
            await shared.aclose()


# -- de-duplicated handlers commit their effects with the ack ------------------------------------------
class Flaky(Agent, name="rel-flaky"):
    def __init__(self) -> None:
        super().__init__()
        self.attempts: Counter[int] = Counter()

    @handle("rel.flaky", output="rel.flaky.out", dedupe=True)
    async def on_ping(self, ping: Ping, ctx: Context) -> Pong:
        self.attempts[ping.n] += 1
        await ctx.publish("rel.flaky.side", Pong(n=-ping.n))  # an effect before failing
        if self.attempts[ping.n] == 1:
            raise RuntimeError("first attempt fails after its side effect")
        return Pong(n=ping.n)


@pytest.mark.parametrize("where", ["memory", "redis"])
async def test_dedupe_handler_effects_land_once_with_the_ack(where: str, tmp_path: Path) -> None:
    from agentbus import MemoryTransport

    with RedisServer(directory=tmp_path / "redis") as server:
        shared = MemoryTransport() if where == "memory" else None
        url = None if where == "memory" else server.url + "?prefix=rel:"
        flaky = Flaky()
        async with Runtime(url, transport=shared, retry_backoff=(0.01, 0.02)) as rt:
            rt.add(flaky)
            async with rt.run("flaky") as run:
                await rt.publish("rel.flaky", Ping(n=7))
                await wait_for(lambda: flaky.attempts[7] == 2, message="the second attempt")
                await rt.idle()
            side = await rt.transport.read_tail("rel.flaky.side", "0-0", count=10, block_ms=None)
            out = await rt.transport.read_tail("rel.flaky.out", "0-0", count=10, block_ms=None)
            # The failed attempt's side effect was never sent; the good one's landed once.
            assert len(side) == 1
            assert len(out) == 1
            published = [r for r in await rt.journal.records(run.run_id) if r.kind == "published"]
            assert sorted(r.record["topic"] for r in published) == [
                "rel.flaky",
                "rel.flaky.out",
                "rel.flaky.side",
            ]
            # A second delivery of the same event (e.g. after a claim) writes nothing more.
            [event] = await rt.transport.read_tail("rel.flaky", "0-0", count=1, block_ms=None)
            await rt.transport.publish("rel.flaky", event.payload or b"")
            await asyncio.sleep(0.3)
            await rt.idle()
            assert flaky.attempts[7] == 2  # the marker stopped it before the handler
            out = await rt.transport.read_tail("rel.flaky.out", "0-0", count=10, block_ms=None)
            assert len(out) == 1
        if shared is not None:  # a transport passed in is the caller's to close
            await shared.aclose()
