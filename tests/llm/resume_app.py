"""A writer agent that makes four model calls per event, for the crash-and-resume test.

Its model comes from the environment (``OPENAI_*``: the test's local OpenAI-compatible
server). Each request carries the previous answer, so a resumed attempt asks the same
as the crashed one only if it got the crashed attempt's answers back. Between the
second and third model call it runs a "research" tool; with ``RESUME_RESEARCH_S`` set
(the worker the test kills) the tool takes that long, which is when the test kills it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from agentbus import Agent, App, Context, Message, handle
from agentbus.agents import ChatMessage, ChatRequest, call_model, model_from_env

ESSAYS = "resume.essays"
DRAFTS = "resume.drafts"
PARTS = 4


class Essay(Message, type="resume.Essay"):
    topic: str


class Draft(Message, type="resume.Draft"):
    parts: list[str]


class Writer(Agent, name="writer"):
    def __init__(self) -> None:
        super().__init__()
        self.model = model_from_env()

    @handle(ESSAYS, output=DRAFTS)
    async def write(self, essay: Essay, ctx: Context) -> Draft:
        parts: list[str] = []
        for i in range(PARTS):
            if i == 2:
                await ctx.invoke("tool", "research", {"topic": essay.topic}, self._research)
            previous = parts[-1] if parts else "(none)"
            request = ChatRequest(
                messages=[
                    ChatMessage(role="system", content="Write one paragraph."),
                    ChatMessage(
                        role="user",
                        content=f"Part {i + 1} of {PARTS} on {essay.topic}; after: {previous}",
                    ),
                ]
            )
            response = await call_model(ctx, self.model, request)
            parts.append(response.text)
        return Draft(parts=parts)

    async def _research(self) -> dict[str, Any]:
        await asyncio.sleep(float(os.environ.get("RESUME_RESEARCH_S", "0")))
        return {"notes": "tides follow the moon"}


app = App("resume-writer", [Writer])
