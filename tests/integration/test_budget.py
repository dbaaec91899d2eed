"""Run budgets: each limit refuses the call that would pass it, on memory and Redis.

A handler makes model or tool calls for a request; the run's budget lets only some be
made. The refused call raises ``BudgetExceeded`` in the handler, which is not retried
(the requester gets it as a ``RemoteError`` at once), the journal says which limit, and
the run ends ``budget_exceeded`` although its own block then fails or completes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agentbus import (
    Agent,
    Budget,
    BudgetExceeded,
    Context,
    MemoryTransport,
    Message,
    RemoteError,
    Runtime,
    handle,
)
from agentbus.costs import ModelPrice
from agentbus.inspect import build_trace, render_tree
from agentbus.testing import wait_for
from agentbus.testing.workers import run_cli

FAST: dict[str, Any] = {"block_ms": 50, "retry_backoff": (0.01, 0.05), "max_attempts": 3}
TOPIC = "budget.spend"


class Spend(Message, type="budget.Spend"):
    kind: str  # "model" or "tool"
    calls: int
    model: str = "m"
    max_tokens: int | None = None


class Spent(Message, type="budget.Spent"):
    made: int


class Spender(Agent, name="budget-spender"):
    """Makes ``calls`` calls of ``kind``; each model call uses 40 input tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.attempts = 0
        self.refused: list[BudgetExceeded] = []

    @handle(TOPIC)
    async def spend(self, msg: Spend, ctx: Context) -> Spent:
        self.attempts += 1

        async def call() -> dict[str, Any]:
            self.live += 1
            return {"text": "ok", "usage": {"input_tokens": 40, "output_tokens": 0}}

        for _ in range(msg.calls):
            request: dict[str, Any] = {"model": msg.model}
            if msg.max_tokens is not None:
                request["max_tokens"] = msg.max_tokens
            try:
                await ctx.invoke(msg.kind, "ask", request, call)  # type: ignore[arg-type]
            except BudgetExceeded as exc:
                self.refused.append(exc)
                raise
        return Spent(made=msg.calls)


@pytest.fixture
async def runtime(backend: str, url_for: str) -> AsyncIterator[tuple[Runtime, Spender]]:
    agent = Spender()
    shared = MemoryTransport() if backend == "memory" else None
    rt = Runtime(transport=shared, **FAST) if shared else Runtime(url_for, **FAST)
    rt.add(agent)
    await rt.start()
    try:
        yield rt, agent
    finally:
        await rt.aclose()
        if shared is not None:
            await shared.aclose()


async def refused_run(rt: Runtime, budget: Budget, msg: Spend) -> tuple[str, dict[str, Any]]:
    """Run ``msg`` under ``budget``, expecting a refusal; the run id and its record."""
    with pytest.raises(RemoteError) as raised:
        async with rt.run("budgeted", budget=budget) as run:
            await run.request(TOPIC, msg, timeout=15)
    assert raised.value.error_type == "BudgetExceeded"
    info = await rt.journal.run(run.run_id)
    assert info.status == "budget_exceeded"
    records = [r.record for r in await rt.journal.records(run.run_id)]
    exceeded = [r for r in records if r["kind"] == "budget_exceeded"]
    assert len(exceeded) == 1, exceeded
    dead = [r for r in records if r["kind"] == "dead_lettered"]
    assert len(dead) == 1
    assert dead[0]["reason"] == "budget exceeded"
    return run.run_id, exceeded[0]


async def test_model_calls_limit(runtime: tuple[Runtime, Spender]) -> None:
    rt, agent = runtime
    _, rec = await refused_run(rt, Budget(model_calls=3), Spend(kind="model", calls=5))
    assert agent.live == 3
    assert agent.attempts == 1  # final: not retried although max_attempts is 3
    assert rec["limit"] == "model_calls"
    assert rec["spent"] == 3
    assert rec["attempted"] == 1
    assert agent.refused[0].limit == "model_calls"


async def test_tool_calls_limit(runtime: tuple[Runtime, Spender]) -> None:
    rt, agent = runtime
    _, rec = await refused_run(rt, Budget(tool_calls=2), Spend(kind="tool", calls=4))
    assert agent.live == 2
    assert rec["limit"] == "tool_calls"
    assert rec["call"] == "tool:ask"


async def test_tokens_limit(runtime: tuple[Runtime, Spender]) -> None:
    rt, agent = runtime
    # 40 tokens a call: after 3 calls 120 >= 100, so the 4th is refused (the 3rd call
    # passed the limit: tokens are known only after a call).
    _, rec = await refused_run(rt, Budget(tokens=100), Spend(kind="model", calls=6))
    assert agent.live == 3
    assert rec["limit"] == "tokens"
    assert rec["spent"] == 120


async def test_tokens_estimate_from_max_tokens(runtime: tuple[Runtime, Spender]) -> None:
    rt, agent = runtime
    # Each call reserves its max_tokens (50) first: 40 spent + 50 > 60 refuses the 2nd.
    _, rec = await refused_run(rt, Budget(tokens=60), Spend(kind="model", calls=3, max_tokens=50))
    assert agent.live == 1
    assert rec["limit"] == "tokens"
    assert rec["spent"] == 40
    assert rec["attempted"] == 50


async def test_cost_limit(runtime: tuple[Runtime, Spender]) -> None:
    rt, agent = runtime
    prices = {"m": ModelPrice(input=10.0, output=0.0)}  # 40 tokens: $0.0004 a call
    _, rec = await refused_run(rt, Budget(cost=0.001, prices=prices), Spend(kind="model", calls=5))
    assert agent.live == 3
    assert rec["limit"] == "cost"
    assert rec["spent"] == pytest.approx(0.0012)


async def test_cost_limit_refuses_an_unpriced_model(runtime: tuple[Runtime, Spender]) -> None:
    rt, agent = runtime
    _, rec = await refused_run(
        rt, Budget(cost=1.0, prices={}), Spend(kind="model", calls=1, model="unknown")
    )
    assert agent.live == 0
    assert rec["limit"] == "cost"
    assert rec["unpriced_model"] == "unknown"


async def test_deadline(runtime: tuple[Runtime, Spender]) -> None:
    rt, agent = runtime
    _, rec = await refused_run(rt, Budget(deadline=timedelta(0)), Spend(kind="tool", calls=1))
    assert agent.live == 0
    assert rec["limit"] == "deadline"


async def test_within_budget_completes(runtime: tuple[Runtime, Spender]) -> None:
    rt, agent = runtime
    budget = Budget(tokens=1000, model_calls=3, tool_calls=1, deadline=timedelta(minutes=5))
    async with rt.run("budgeted", budget=budget) as run:
        reply = await run.request(TOPIC, Spend(kind="model", calls=3), timeout=15)
    assert reply.made == 3
    assert agent.live == 3
    info = await rt.journal.run(run.run_id)
    assert info.status == "completed"
    spent = await rt.transport.store.reserve(run.run_id, {}, {"model_calls": 0, "tokens": 0})
    assert spent.spent == {"model_calls": 3, "tokens": 120}


async def test_run_without_budget_never_reserves(
    runtime: tuple[Runtime, Spender], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, agent = runtime

    async def never(*args: Any) -> Any:
        raise AssertionError("a run without a budget reserved")

    monkeypatch.setattr(rt.transport.store, "reserve", never)
    async with rt.run("free") as run:
        reply = await run.request(TOPIC, Spend(kind="model", calls=5), timeout=15)
    assert reply.made == 5
    assert agent.live == 5
    assert (await rt.journal.run(run.run_id)).status == "completed"


async def test_substituted_calls_are_not_charged(runtime: tuple[Runtime, Spender]) -> None:
    """A call answered from a recording (replay) or a crashed attempt is not live."""
    rt, agent = runtime

    async def recorded(*args: Any) -> dict[str, Any]:
        return {"text": "recorded", "usage": {"input_tokens": 40, "output_tokens": 0}}

    rt._calls.substitute = recorded
    async with rt.run("replayed", budget=Budget(model_calls=1, tokens=1)) as run:
        reply = await run.request(TOPIC, Spend(kind="model", calls=4), timeout=15)
    assert reply.made == 4
    assert agent.live == 0
    assert (await rt.journal.run(run.run_id)).status == "completed"


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["redis"])
async def test_runs_and_trace_show_spend_against_limits(
    runtime: tuple[Runtime, Spender], url_for: str, tmp_path: Path
) -> None:
    rt, _ = runtime
    budget = Budget(tokens=100, model_calls=10, cost=0.01, prices={"m": ModelPrice(10.0, 0.0)})
    run_id, _ = await refused_run(rt, budget, Spend(kind="model", calls=5))
    await rt.writer.flush()

    listed = run_cli("runs", "--json", "--url", url_for, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (row,) = [r for r in json.loads(listed.stdout) if r["run_id"] == run_id]
    assert row["status"] == "budget_exceeded"
    shown = row["budget"]
    assert shown["tokens"] == {"spent": 120, "limit": 100}
    assert shown["model_calls"] == {"spent": 3, "limit": 10}
    assert shown["cost"]["spent"] == pytest.approx(0.0012)
    assert shown["exceeded"] == "tokens"
    table = run_cli("runs", "--url", url_for, cwd=tmp_path)
    assert "BUDGET" in table.stdout
    assert "tokens 120/100, $0.0012/$0.0100, model calls 3/10" in table.stdout

    trace = run_cli("trace", run_id, "--url", url_for, cwd=tmp_path)
    assert trace.returncode == 0, trace.stderr
    assert "budget tokens 120/100" in trace.stdout
    assert "EXCEEDED: tokens" in trace.stdout
    as_json = json.loads(run_cli("trace", run_id, "--json", "--url", url_for, cwd=tmp_path).stdout)
    assert as_json["budget"]["tokens"] == {"spent": 120, "limit": 100}


async def test_trace_of_a_run_without_budget_has_none(runtime: tuple[Runtime, Spender]) -> None:
    rt, _ = runtime
    async with rt.run("free") as run:
        await run.request(TOPIC, Spend(kind="model", calls=1), timeout=15)
    await rt.writer.flush()
    info = await rt.journal.run(run.run_id)
    trace = build_trace(info, await rt.journal.records(run.run_id))
    assert trace.budget is None
    assert "\nbudget " not in render_tree(trace)


class Nap(Message, type="budget.Nap"):
    n: int


class Sleeper(Agent, name="budget-sleeper"):
    """Sleeps long without any call: only the deadline's own enforcement can stop it."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[int] = []
        self.stopped: list[float] = []

    @handle("budget.nap")
    async def nap(self, msg: Nap, ctx: Context) -> None:
        self.started.append(msg.n)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.stopped.append(time.time())
            raise


async def test_a_deadline_stops_handlers_that_make_no_calls(backend: str, url_for: str) -> None:
    sleeper = Sleeper()
    shared = MemoryTransport() if backend == "memory" else None
    rt = Runtime(transport=shared, **FAST) if shared else Runtime(url_for, **FAST)
    rt.add(sleeper)
    try:
        await rt.start()
        async with rt.run("napping", budget=Budget(deadline=timedelta(seconds=1))) as run:
            await run.publish("budget.nap", Nap(n=1))
            await run.publish("budget.nap", Nap(n=2))  # queued or in flight: not finished

            async def stopped() -> bool:
                info = await rt.journal.run(run.run_id)
                return info.status == "budget_exceeded" and len(sleeper.stopped) == len(
                    sleeper.started
                )

            await wait_for(stopped, timeout=15, message="the deadline stopping the handlers")
        records = [r.record for r in await rt.journal.records(run.run_id)]
    finally:
        await rt.aclose()
        if shared is not None:
            await shared.aclose()
    (exceeded,) = [r for r in records if r["kind"] == "budget_exceeded"]
    assert sleeper.stopped
    assert min(sleeper.stopped) >= exceeded["allowed"]  # stopped by the deadline, after it
    assert exceeded["limit"] == "deadline"
    assert exceeded["allowed"] <= exceeded["spent"]
    ignored = [r for r in records if r["kind"] == "ignored"]
    assert len(ignored) == 2
    assert {r["reason"] for r in ignored} == {"run deadline passed"}
