"""Agents hosted by `agentbus worker` subprocesses in the reliability tests."""

from __future__ import annotations

import asyncio

from agentbus import Agent, App, Context, Message, handle


class Item(Message, type="rel.Item"):
    n: int
    sleep: float = 0.0


class Handled(Message, type="rel.Handled"):
    n: int
    by: str
    event: str


class Crunch(Agent, name="rel-crunch"):
    """At-least-once: a crash between the output and the ack repeats the output."""

    @handle("rel.items", output="rel.handled")
    async def work(self, item: Item, ctx: Context) -> Handled:
        if item.sleep:
            await asyncio.sleep(item.sleep)
        assert ctx.event is not None
        return Handled(n=item.n, by=ctx.runtime.consumer, event=ctx.event.id)


class OnceCrunch(Agent, name="rel-once"):
    """De-duplicated: its output is committed with the ack, so it appears exactly once."""

    @handle("rel.once", output="rel.once.out", dedupe=True)
    async def work(self, item: Item, ctx: Context) -> Handled:
        if item.sleep:
            await asyncio.sleep(item.sleep)
        assert ctx.event is not None
        return Handled(n=item.n, by=ctx.runtime.consumer, event=ctx.event.id)


app = App("rel", [Crunch, OnceCrunch])
