"""Agents for the tracing tests: a planner (tool call) asks a writer (model call).

``planner_app`` and ``writer_app`` are hosted by separate `agentbus worker` processes;
``app`` holds both and has a ``main`` for `agentbus run`.
"""

from __future__ import annotations

import os
from typing import Any

from agentbus import Agent, App, Context, Message, Run, handle

#: The variable a real model client would read its key from; it must never be traced.
API_KEY_ENV = "TRACING_TEST_API_KEY"


class Job(Message, type="tracing.Job"):
    topic: str


class Draft(Message, type="tracing.Draft"):
    text: str


class Answer(Message, type="tracing.Answer"):
    text: str
    hits: int


class Planner(Agent, name="tracing-planner"):
    @handle("tracing.jobs")
    async def plan(self, job: Job, ctx: Context) -> Answer:
        await ctx.note("tracing.planned", topic=job.topic)

        async def lookup() -> dict[str, Any]:
            return {"hits": 3}

        found = await ctx.invoke("tool", "lookup", {"query": job.topic}, lookup)
        draft: Answer = await ctx.request(
            "tracing.write", Draft(text=f"write about {job.topic}"), expect=Answer, timeout=30
        )
        return Answer(text=draft.text, hits=int(found["hits"]))


class Writer(Agent, name="tracing-writer"):
    @handle("tracing.write")
    async def write(self, draft: Draft, ctx: Context) -> Answer:
        key = os.environ.get(API_KEY_ENV, "")

        async def chat() -> dict[str, Any]:
            # What a real client sends along; the tracer must never see it.
            headers = {"authorization": f"Bearer {key}"}
            assert headers["authorization"].endswith(key)
            return {
                "message": {"role": "assistant", "content": f"{draft.text}: done"},
                "usage": {"input_tokens": 7, "output_tokens": 5},
                "model": "fake-model-001",
                "provider": "fake",
                "finish_reason": "stop",
            }

        request = {"messages": [{"role": "user", "content": draft.text}]}
        response = await ctx.invoke("model", "fake-model", request, chat)
        return Answer(text=response["message"]["content"], hits=0)


planner_app = App("tracing-planner", [Planner])
writer_app = App("tracing-writer", [Writer])
app = App("tracing", [Planner, Writer])


@app.main
async def main(run: Run) -> Answer:
    answer: Answer = await run.request("tracing.jobs", Job(topic="streams"), timeout=30)
    return answer
