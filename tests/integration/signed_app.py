"""Agents for the signed-routing tests (replayable: the tool call is answered from the journal)."""

from __future__ import annotations

from typing import Any

from agentbus import Agent, App, Context, Message, handle


class Hello(Message, type="signed.Hello"):
    n: int


class Greeted(Message, type="signed.Greeted"):
    n: int


class Greeter(Agent, name="signed-greeter"):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, int]] = []

    @handle("signed.in", output="signed.out")
    async def greet(self, hello: Hello, ctx: Context) -> Greeted:
        async def double() -> dict[str, Any]:
            return {"n": 2 * hello.n}

        found = await ctx.invoke("tool", "double", {"n": hello.n}, double)
        self.seen.append(("in", hello.n))
        return Greeted(n=int(found["n"]))

    @handle("signed.other")
    async def other(self, hello: Hello, ctx: Context) -> None:
        self.seen.append(("other", hello.n))


app = App("signed", agents=[Greeter])
