"""Agents that meet secrets in every shape, for tests/integration/test_secrets.py.

Each secret is a distinct marker, so a leak names its path. None of them is ever put in a
message by the application itself: they reach agentbus through exception text, a tool's
URL argument and result, request headers, log lines and run metadata.
"""

from __future__ import annotations

from typing import Any

from agentbus import Agent, App, Context, Message, RemoteError, Run, handle

ERR_PASSWORD = "Zq3errpw"  # ?password= in a handler's exception text
ERR_API_KEY = "Zq4errkey"  # ?api_key= in a handler's exception text
TOOL_API_KEY = "Zq5toolkey"  # ?api_key= in a tool's URL argument
TOOL_TOKEN = "Zq6tooltok"  # ?token= / access_token in a tool's result
BEARER = "Zq7bearer"  # Authorization: Bearer ... in a request header and an error
OPENAI_KEY = "sk-Zq8abcdefghijklmnop"  # an OpenAI-style key in a log line and an error
META_PASSWORD = "Zq0metapw"  # a URL with a password in the run's metadata
SECRETS = (
    ERR_PASSWORD,
    ERR_API_KEY,
    TOOL_API_KEY,
    TOOL_TOKEN,
    BEARER,
    OPENAI_KEY,
    META_PASSWORD,
)


class Ask(Message, type="secrets.Ask"):
    text: str


class Told(Message, type="secrets.Told"):
    text: str


class Fetcher(Agent, name="secrets-fetcher"):
    """Calls a tool with a keyed URL; the tool answers with a tokened URL."""

    @handle("secrets.fetch")
    async def fetch(self, ask: Ask, ctx: Context) -> Told:
        async def call() -> dict[str, Any]:
            return {
                "next": f"https://files.example.test/f?token={TOOL_TOKEN}&page=2",
                "access_token": TOOL_TOKEN,
            }

        request = {
            "url": f"https://api.example.test/v1/search?api_key={TOOL_API_KEY}&q={ask.text}",
            "headers": {"Authorization": f"Bearer {BEARER}"},
        }
        result = await ctx.invoke("tool", "fetch", request, call)
        ctx.logger.warning("fetched %s with key %s", result["next"], OPENAI_KEY)
        await ctx.note("secrets.fetched", url=result["next"], key=OPENAI_KEY)
        return Told(text=f"fetched page {ask.text}")


class Failer(Agent, name="secrets-failer"):
    """Fails with secrets in the exception text."""

    @handle("secrets.fail")
    async def fail(self, ask: Ask, ctx: Context) -> Told:
        raise RuntimeError(
            f"upstream https://svc.example.test/x?password={ERR_PASSWORD}&api_key={ERR_API_KEY}"
            f" refused; sent Authorization: Bearer {BEARER} with key {OPENAI_KEY}"
        )


async def drive(run: Run) -> dict[str, str]:
    """Ask the fetcher, then the failer; return what came back (the error's text too)."""
    told = await run.request("secrets.fetch", Ask(text="one"), expect=Told, timeout=30)
    try:
        await run.request("secrets.fail", Ask(text="two"), expect=Told, timeout=30)
    except RemoteError as exc:
        return {"told": told.text, "error": str(exc)}
    raise AssertionError("the failer did not fail")


async def main(run: Run) -> dict[str, str]:
    return await drive(run)


app = App("secrets", agents=[Fetcher, Failer], main=main)
