"""An app hosted by `agentbus worker` subprocesses in the multi-process budget test."""

from __future__ import annotations

import asyncio
from typing import Any

from agentbus import Agent, App, Context, Message, handle


class Ask(Message, type="bud.Ask"):
    n: int


class Answered(Message, type="bud.Answered"):
    n: int
    by: str


class Caller(Agent, name="bud-caller"):
    """One model call per event (a short sleep stands for the model)."""

    @handle("bud.asks", output="bud.answers")
    async def ask(self, msg: Ask, ctx: Context) -> Answered:
        async def call() -> dict[str, Any]:
            await asyncio.sleep(0.01)
            return {"text": "ok", "usage": {"input_tokens": 5, "output_tokens": 5}}

        await ctx.invoke("model", "ask", {"model": "m", "n": msg.n}, call)
        return Answered(n=msg.n, by=ctx.runtime.consumer)


app = App("bud", [Caller])
