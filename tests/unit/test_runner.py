"""The delivery runner: handlers inline in a drainer task, a task of their own when they wait."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from agentbus._runner import Runner
from agentbus.transports import Delivery

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("unit_runner_var", default="unset")


def delivery(n: int) -> Delivery:
    return Delivery("t", f"{n}-0", b"{}")


Handler = Callable[[Delivery], Awaitable[None]]


def runner_for(handler: Handler, concurrency: int = 8) -> Runner:
    def dispatch(d: Delivery) -> Coroutine[Any, Any, None]:
        async def run() -> None:
            await handler(d)

        return run()

    return Runner(dispatch, concurrency)


async def settle(runner: Runner) -> None:
    for _ in range(200):
        if not runner.busy:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the runner never went idle")


async def test_handlers_that_never_wait_share_one_task_in_order() -> None:
    seen: list[tuple[str, asyncio.Task[Any] | None]] = []

    async def handler(d: Delivery) -> None:
        seen.append((d.entry_id, asyncio.current_task()))

    runner = runner_for(handler)
    for n in range(5):
        runner.submit(delivery(n))
    await settle(runner)

    assert [entry for entry, _ in seen] == [f"{n}-0" for n in range(5)]
    assert len({task for _, task in seen}) == 1  # the drainer, no task per delivery
    assert None not in {task for _, task in seen}


async def test_a_handler_that_waits_keeps_its_task_and_others_go_on() -> None:
    gate = asyncio.Event()
    tasks: dict[str, asyncio.Task[Any] | None] = {}
    done: list[str] = []

    async def handler(d: Delivery) -> None:
        tasks[d.entry_id] = asyncio.current_task()
        if d.entry_id == "0-0":
            await gate.wait()
            assert asyncio.current_task() is tasks["0-0"]  # still its own task
        done.append(d.entry_id)

    runner = runner_for(handler)
    for n in range(3):
        runner.submit(delivery(n))
    await asyncio.sleep(0.02)
    assert done == ["1-0", "2-0"]  # not held up by the waiting one
    assert [key for key, _ in runner.suspended()] == [("t", "0-0")]
    assert tasks["0-0"] is not tasks["1-0"]
    gate.set()
    await settle(runner)
    assert done == ["1-0", "2-0", "0-0"]


async def test_each_handler_has_its_own_context() -> None:
    values: list[str] = []

    async def handler(d: Delivery) -> None:
        values.append(VAR.get())
        VAR.set(d.entry_id)  # must not leak into the next delivery
        await asyncio.sleep(0)
        values.append(VAR.get())

    runner = runner_for(handler)
    for n in range(3):
        runner.submit(delivery(n))
    await settle(runner)
    assert sorted(values) == sorted(["unset"] * 3 + ["0-0", "1-0", "2-0"])
    assert VAR.get() == "unset"


async def test_a_timeout_inside_a_handler_cancels_only_that_handler() -> None:
    outcomes: list[str] = []

    async def handler(d: Delivery) -> None:
        try:
            async with asyncio.timeout(0.02):
                await asyncio.Event().wait()
        except TimeoutError:
            outcomes.append(d.entry_id)

    runner = runner_for(handler)
    for n in range(4):
        runner.submit(delivery(n))
    await settle(runner)
    assert sorted(outcomes) == ["0-0", "1-0", "2-0", "3-0"]


async def test_failures_are_logged_and_the_queue_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    handled: list[str] = []

    async def handler(d: Delivery) -> None:
        if d.entry_id == "0-0":
            raise ValueError("boom")
        if d.entry_id == "1-0":
            raise asyncio.CancelledError  # a handler cancelling itself
        if d.entry_id == "2-0":
            await asyncio.sleep(0)
            raise RuntimeError("after waiting")
        handled.append(d.entry_id)

    runner = runner_for(handler)
    with caplog.at_level(logging.WARNING, logger="agentbus.runtime"):
        for n in range(4):
            runner.submit(delivery(n))
        await settle(runner)
    assert handled == ["3-0"]
    text = caplog.text
    assert "boom" in text
    assert "1-0 was cancelled" in text
    assert "after waiting" in text


async def test_a_key_is_queued_once() -> None:
    gate = asyncio.Event()
    calls: list[str] = []

    async def handler(d: Delivery) -> None:
        calls.append(d.entry_id)
        await gate.wait()

    runner = runner_for(handler)
    runner.submit(delivery(1))
    runner.submit(delivery(1))  # queued
    await asyncio.sleep(0.01)
    runner.submit(delivery(1))  # in progress
    gate.set()
    await settle(runner)
    assert calls == ["1-0"]


async def test_free_slots_count_queued_and_waiting_handlers() -> None:
    gate = asyncio.Event()

    async def handler(d: Delivery) -> None:
        await gate.wait()

    runner = runner_for(handler, concurrency=3)
    assert runner.free() == 3
    for n in range(3):
        runner.submit(delivery(n))
    assert runner.free() == 1  # never below 1: a read always asks for something
    waiter = asyncio.create_task(runner.wait_free(1))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    gate.set()
    await asyncio.wait_for(waiter, timeout=1)
    await settle(runner)
    assert runner.free() == 3


async def test_finish_waits_then_cancels_what_is_left() -> None:
    finished: list[str] = []
    cancelled: list[str] = []

    async def handler(d: Delivery) -> None:
        try:
            await asyncio.sleep(0.01 if d.entry_id == "0-0" else 10)
            finished.append(d.entry_id)
        except asyncio.CancelledError:
            cancelled.append(d.entry_id)
            raise

    runner = runner_for(handler)
    for n in range(3):
        runner.submit(delivery(n))
    left = await runner.finish(grace=0.2)
    assert finished == ["0-0"]
    assert sorted(cancelled) == ["1-0", "2-0"]
    assert left == 2
    assert runner.busy == 0


async def test_inline_handlers_let_the_event_loop_run_between_slices() -> None:
    import time

    handled: list[str] = []
    seen_by_ticker: list[int] = []

    async def handler(d: Delivery) -> None:
        time.sleep(0.006)  # noqa: ASYNC251 - the point: a handler that hogs the loop
        handled.append(d.entry_id)

    async def ticker() -> None:
        while len(handled) < 10:
            seen_by_ticker.append(len(handled))
            await asyncio.sleep(0)

    runner = runner_for(handler, concurrency=16)
    for n in range(10):
        runner.submit(delivery(n))
    await asyncio.wait_for(ticker(), timeout=10)
    await settle(runner)
    steps = [b - a for a, b in itertools.pairwise(seen_by_ticker)]
    assert max(steps) <= 2  # other work ran at least every second handler
    assert handled == [f"{n}-0" for n in range(10)]
