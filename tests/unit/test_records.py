"""Each journal record kind has a typed shape, and what a run writes fits it."""

from __future__ import annotations

from typing import NotRequired, get_type_hints

from agentbus import Agent, Context, Message, Runtime, handle
from agentbus.journal import RECORD_KINDS
from agentbus.records import RECORD_TYPES


class Ping(Message, type="unit.records.Ping"):
    n: int


class Pong(Message, type="unit.records.Pong"):
    n: int


class Echo(Agent, name="records-echo"):
    @handle("unit.records.ping")
    async def ping(self, msg: Ping, ctx: Context) -> Pong:
        await ctx.note("echoing", n=msg.n)
        await ctx.invoke("tool", "double", {"n": msg.n}, self._double)
        return Pong(n=msg.n)

    async def _double(self) -> dict[str, int]:
        return {"n": 2}


def test_every_record_kind_has_a_shape() -> None:
    assert set(RECORD_TYPES) == set(RECORD_KINDS)


def _required(shape: type) -> set[str]:
    hints = get_type_hints(shape, include_extras=True)
    return {
        k
        for k, v in hints.items()
        if k in shape.__required_keys__ and getattr(v, "__origin__", None) is not NotRequired
    }


async def test_the_records_a_run_writes_fit_their_shapes() -> None:
    async with Runtime() as rt:
        rt.add(Echo())
        await rt.ready()
        async with rt.run("records") as run:
            await run.request("unit.records.ping", Ping(n=1), expect=Pong)
        await rt.idle()
        records = await rt.journal.records(run.run_id)
    kinds = {r.kind for r in records}
    assert {"run_started", "published", "delivered", "handled", "replied", "step"} <= kinds
    assert "tool_call" in kinds
    assert "run_finished" in kinds
    for r in records:
        shape = RECORD_TYPES[r.kind]
        missing = _required(shape) - set(r.record)
        assert not missing, (r.kind, missing, r.record)
        extra = set(r.record) - set(get_type_hints(shape))
        assert r.kind == "step" or not extra, (r.kind, extra)  # a step's details are its own
