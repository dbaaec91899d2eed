"""A request with no ``timeout`` waits while its request is in hand, and says why it gives up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import agentbus._requests as requests_module
from agentbus import Agent, Context, MemoryTransport, Message, RequestTimeout, Runtime, handle
from agentbus._requests import TAKE_TIMEOUT, recovery_window
from agentbus.cli import build_parser


class Ask(Message, type="rw.Ask"):
    text: str


class Answer(Message, type="rw.Answer"):
    text: str


class Slow(Agent, name="slow"):
    @handle("rw.slow")
    async def on_ask(self, msg: Ask, ctx: Context) -> Answer:
        await asyncio.sleep(1.0)
        return Answer(text=msg.text.upper())


MakeRuntime = Callable[..., Runtime]


@pytest.fixture
async def make_runtime(backend: str, url_for: str) -> AsyncIterator[MakeRuntime]:
    shared = MemoryTransport() if backend == "memory" else None
    made: list[Runtime] = []

    def make(*agents: Agent, **options: Any) -> Runtime:
        options = {"block_ms": 100, **options}
        rt = Runtime(transport=shared, **options) if shared else Runtime(url_for, **options)
        rt.add(*agents)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.aclose()
    if shared is not None:
        await shared.aclose()


@pytest.fixture
def short_take(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0.2 s take timeout and 0.1 s re-checks, so the tests need not wait 30 s."""
    monkeypatch.setattr(requests_module, "TAKE_TIMEOUT", 0.2)
    monkeypatch.setattr(requests_module, "RECHECK_INTERVAL", 0.1)


def test_the_defaults_let_recovery_of_a_crashed_consumer_win() -> None:
    rt = Runtime("memory://?journal=")
    worker = build_parser().parse_args(["worker", "app.py"])
    # Workers and requesters agree on the visibility timeout by default...
    assert worker.visibility_timeout == rt.settings.visibility_timeout
    # ...and a request idle on a dead consumer is waited for longer than the worst case
    # before a live one claims it: idle for the visibility timeout, plus one claim period.
    worst = rt.settings.visibility_timeout + rt.settings.claim_interval
    assert recovery_window(rt.settings.visibility_timeout, rt.settings.claim_interval) > worst
    # The first look at a late request comes while recovery may still be under way, and a
    # default request has no deadline that could end the wait before recovery does.
    assert worst >= TAKE_TIMEOUT
    assert Runtime.request.__kwdefaults__["timeout"] is None


@pytest.mark.usefixtures("short_take")
async def test_default_request_waits_for_a_handler_that_holds_it(
    make_runtime: MakeRuntime,
) -> None:
    server = make_runtime(Slow(), visibility_timeout=0.5)  # leases renewed every ~0.17 s
    client = make_runtime()
    await server.start()
    await client.start()
    begun = time.monotonic()
    assert await client.request("rw.slow", Ask(text="hi"), expect=Answer) == Answer(text="HI")
    assert time.monotonic() - begun >= 1.0  # five times the take timeout
    # An explicit timeout stays a deadline, and its error says where the request stands.
    with pytest.raises(RequestTimeout) as info:
        await client.request("rw.slow", Ask(text="hi"), timeout=0.4)
    assert "it is pending on consumer" in str(info.value)
    assert "of group 'slow' (delivery 1" in str(info.value)


@pytest.mark.usefixtures("short_take")
async def test_default_request_gives_up_when_no_agent_is_subscribed(
    make_runtime: MakeRuntime,
) -> None:
    client = make_runtime()
    await client.start()
    begun = time.monotonic()
    with pytest.raises(RequestTimeout) as info:
        await client.request("rw.nobody", Ask(text="hello?"))
    assert time.monotonic() - begun < 3
    assert "no agent is subscribed to topic 'rw.nobody'" in str(info.value)


@pytest.mark.usefixtures("short_take")
async def test_default_request_gives_up_when_nobody_is_left_to_recover_it(
    make_runtime: MakeRuntime,
) -> None:
    client = make_runtime(visibility_timeout=0.2)
    await client.start()
    await client.transport.create_group("rw.ghost", "ghosts")
    window = recovery_window(client.settings.visibility_timeout, client.settings.claim_interval)

    async def take_and_die() -> None:
        # A consumer reads the request and is never heard of again.
        await client.transport.read_group("ghosts", "ghost-1", ["rw.ghost"], count=1, block_ms=5000)

    begun = time.monotonic()
    taker = asyncio.create_task(take_and_die())
    with pytest.raises(RequestTimeout) as info:
        await client.request("rw.ghost", Ask(text="anyone?"))
    await taker
    waited = time.monotonic() - begun
    assert window <= waited < window + 3
    message = str(info.value)
    assert "pending on consumer 'ghost-1' of group 'ghosts'" in message
    assert "is any consumer of 'ghosts' alive?" in message
