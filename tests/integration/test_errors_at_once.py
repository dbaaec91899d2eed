"""A request whose event is dead-lettered gets its error reply at once, not a timeout."""

from __future__ import annotations

import time

import pytest
from pydantic import Field

from agentbus import Agent, Context, Message, RemoteError, Runtime, handle


class Strict(Message, type="eao.Strict"):
    n: int = Field(gt=0)


class Answer(Message, type="eao.Answer"):
    n: int


class Checker(Agent, name="eao-checker"):
    @handle("eao.check")
    async def check(self, msg: Strict, ctx: Context) -> Answer:
        return Answer(n=msg.n)


async def test_a_request_with_an_invalid_payload_fails_at_once(url_for: str) -> None:
    async with Runtime(url_for) as rt:
        rt.add(Checker())
        async with rt.run("invalid") as run:
            assert (await run.request("eao.check", Strict(n=2), expect=Answer)).n == 2
            started = time.monotonic()
            with pytest.raises(RemoteError) as info:
                # Skips validation here, as a sender with an older class would.
                await run.request("eao.check", Strict.model_construct(n=-1), timeout=20)
            elapsed = time.monotonic() - started
    assert elapsed < 5, f"the error reply took {elapsed:.1f}s"
    assert info.value.error_type == "DeadLettered"
    assert "invalid payload" in str(info.value)
    assert info.value.agent == "eao-checker"


class Crashes(Agent, name="eao-crashes"):
    @handle("eao.crash", max_attempts=2)
    async def crash(self, msg: Strict, ctx: Context) -> Answer:
        raise RuntimeError("boom")


async def test_a_request_whose_handler_keeps_failing_gets_the_handlers_error(
    url_for: str,
) -> None:
    async with Runtime(url_for, retry_backoff=(0.01, 0.02)) as rt:
        rt.add(Crashes())
        async with rt.run("fails") as run:
            with pytest.raises(RemoteError) as info:
                await run.request("eao.crash", Strict(n=1), timeout=20)
    assert info.value.error_type == "RuntimeError"
    assert "boom" in str(info.value)
