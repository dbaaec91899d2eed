"""An app for the dead-worker pruning tests: a broadcast listener that makes a request.

Each worker hosting it has a broadcast group (``listener:<consumer>``) and, after its
first request, a reply inbox (``_inbox.<consumer>``): what a killed worker leaves behind.
"""

from __future__ import annotations

import asyncio

from agentbus import Agent, App, Context, Message, handle


class News(Message, type="prune.News"):
    n: int
    #: The consumer that keeps this one in hand (pending) instead of handling it.
    hold_on: str = ""


class Ask(Message, type="prune.Ask"):
    n: int


class Answer(Message, type="prune.Answer"):
    n: int


class Heard(Message, type="prune.Heard"):
    n: int
    by: str


class Listener(Agent, name="listener"):
    @handle("prune.news", mode="broadcast", output="prune.heard")
    async def hear(self, news: News, ctx: Context) -> Heard:
        if news.hold_on == ctx.runtime.consumer:
            await asyncio.sleep(3600)  # killed meanwhile: the entry stays pending
        answer = await ctx.request("prune.ask", Ask(n=news.n), expect=Answer, timeout=10)
        return Heard(n=answer.n, by=ctx.runtime.consumer)


class Answerer(Agent, name="answerer"):
    @handle("prune.ask")
    async def answer(self, ask: Ask, ctx: Context) -> Answer:
        return Answer(n=ask.n)


app = App("prune", [Listener, Answerer])
