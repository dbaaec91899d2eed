"""LLM agents: a system prompt, tools, a tool-call loop, structured output and memory.

Every model call and every tool call goes through ``ctx.invoke`` — the runtime's journaled,
replayable seam — so a run's journal holds each request, response, usage and duration, and
``agentbus replay`` can substitute the recorded results. API keys never reach the journal:
requests are recorded as the provider-neutral :class:`ChatRequest`, which has no credentials.

Use it two ways:

* give it a ``topic``: it then answers :class:`Prompt` events there with a :class:`Reply`
  (as a request/reply, or published to ``output``);
* subclass it and call :meth:`LLMAgent.ask` from your own typed handlers.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from agentbus import Agent, Context, Message, Mode, UsageError

from .call import call_model
from .env import model_from_env
from .errors import ModelError
from .model import ChatMessage, ChatModel, ChatRequest, Usage
from .tools import Tool, tool_result_to_text

__all__ = ["LLMAgent", "LLMResult", "Memory", "Prompt", "Reply", "StepLimitExceeded"]

T = TypeVar("T", bound=BaseModel)


class Prompt(Message, type="agents.Prompt"):
    """Ask an :class:`LLMAgent` something. ``conversation`` selects its memory (default: the run)."""

    text: str
    conversation: str | None = None


class Reply(Message, type="agents.Reply"):
    """An :class:`LLMAgent`'s answer; ``data`` holds structured output when one was asked for."""

    text: str
    """The answer (offline: starts with ``[offline model]``)."""
    data: dict[str, Any] | None = None
    """Structured output, when the agent has an ``output`` model."""
    model: str
    """The model that answered."""
    offline: bool = False
    """True when the offline stand-in answered, not a language model."""
    input_tokens: int = 0
    """Prompt tokens over every model call of the answer."""
    output_tokens: int = 0
    """Completion tokens over every model call of the answer."""
    steps: int = 1
    """Model calls made (a tool round trip adds one)."""


class StepLimitExceeded(ModelError):
    """The model kept calling tools past the agent's ``max_steps``."""


class LLMResult(BaseModel):
    """What :meth:`LLMAgent.ask` returns."""

    text: str
    """The answer (offline: starts with ``[offline model]``)."""
    data: dict[str, Any] | None = None
    """Structured output, when ``output`` was given."""
    model: str
    """The model that answered."""
    offline: bool
    """True when the offline stand-in answered, not a language model."""
    usage: Usage
    """Tokens over every model call of the answer."""
    steps: int
    """Model calls made (a tool round trip adds one)."""


class Memory:
    """Conversation histories kept in this process, keyed by conversation (or run) id.

    Bounded: at most ``max_conversations`` (least recently used dropped first), each
    trimmed to its last ``max_messages`` messages. Replicas in other processes do not share
    it; route a conversation to one replica (a partition key) if that matters.
    """

    def __init__(self, *, max_conversations: int = 1000, max_messages: int = 50) -> None:
        self.max_conversations = max_conversations
        self.max_messages = max_messages
        self._store: OrderedDict[str, list[ChatMessage]] = OrderedDict()

    def history(self, key: str) -> list[ChatMessage]:
        """A copy of the conversation so far."""
        if key in self._store:
            self._store.move_to_end(key)
        return list(self._store.get(key, []))

    def extend(self, key: str, messages: Sequence[ChatMessage]) -> None:
        """Append messages to a conversation."""
        items = self._store.setdefault(key, [])
        items.extend(messages)
        del items[: max(0, len(items) - self.max_messages)]
        self._store.move_to_end(key)
        while len(self._store) > self.max_conversations:
            self._store.popitem(last=False)


class LLMAgent(Agent):
    """An agent backed by a chat model (``model``; default: :func:`model_from_env`).

    ``tools`` are :class:`Tool` objects (or plain typed functions, wrapped for you). The
    tool-call loop runs at most ``max_steps`` model calls per question. ``output`` (a
    pydantic model) asks for structured output. With ``topic``, the agent answers
    :class:`Prompt` events there; ``mode`` and ``output_topic`` work as in ``@handle``.

    Raises :class:`UsageError` for a bad configuration.
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        model: ChatModel | None = None,
        system_prompt: str = "",
        tools: Sequence[Tool[Any, Any] | Any] = (),
        max_steps: int = 6,
        output: type[BaseModel] | None = None,
        memory: Memory | None = None,
        temperature: float | None = None,
        topic: str | None = None,
        mode: Mode = "shared",
        output_topic: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if max_steps < 1:
            raise UsageError(f"max_steps must be at least 1, got {max_steps!r}")
        self.model: ChatModel = model or model_from_env()
        self.system_prompt = system_prompt
        self.tools: dict[str, Tool[Any, Any]] = {}
        for t in tools:
            wrapped = t if isinstance(t, Tool) else Tool(t)
            if wrapped.name in self.tools:
                raise UsageError(f"two tools are named {wrapped.name!r}")
            self.tools[wrapped.name] = wrapped
        self.max_steps = max_steps
        self.output = output
        self.memory = memory or Memory()
        self.temperature = temperature
        self.topic = topic
        if topic is not None:
            self.bind(topic, self.answer_prompt, mode=mode, output=output_topic)

    async def answer_prompt(self, prompt: Prompt, ctx: Context) -> Reply:
        """The handler behind ``topic``: answer a :class:`Prompt` with a :class:`Reply`."""
        result = await self.ask(ctx, prompt.text, conversation=prompt.conversation)
        return Reply(
            text=result.text,
            data=result.data,
            model=result.model,
            offline=result.offline,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            steps=result.steps,
        )

    async def ask(
        self,
        ctx: Context,
        text: str,
        *,
        conversation: str | None = None,
        output: type[BaseModel] | None = None,
    ) -> LLMResult:
        """Run the tool-call loop for ``text`` and return the final answer.

        Raises :class:`StepLimitExceeded` after ``max_steps`` model calls, the model
        client's :class:`ModelError`\\ s, and ``ModelResponseError`` when structured output
        does not validate. Tool errors are reported to the model, not raised.
        """
        schema_type = output or self.output
        key = conversation or ctx.run_id or "default"
        history = self.memory.history(key)
        messages: list[ChatMessage] = []
        if self.system_prompt:
            messages.append(ChatMessage.system(self.system_prompt))
        turn = [ChatMessage.user(text)]
        messages += history + turn
        usage = Usage()
        for step in range(1, self.max_steps + 1):
            request = ChatRequest(
                messages=messages,
                tools=[t.spec for t in self.tools.values()],
                response_schema=None if schema_type is None else schema_type.model_json_schema(),
                response_schema_name=(schema_type.__name__ if schema_type else "response"),
                temperature=self.temperature,
            )
            response = await call_model(ctx, self.model, request)
            usage = Usage(
                input_tokens=usage.input_tokens + response.usage.input_tokens,
                output_tokens=usage.output_tokens + response.usage.output_tokens,
            )
            messages.append(response.message)
            turn.append(response.message)
            if not response.tool_calls:
                data = None
                if schema_type is not None:
                    data = response.parse_as(schema_type).model_dump(mode="json")
                self.memory.extend(key, turn)
                return LLMResult(
                    text=response.text,
                    data=data,
                    model=response.model,
                    offline=response.offline,
                    usage=usage,
                    steps=step,
                )
            for call in response.tool_calls:
                result = await self._call_tool(ctx, call.name, call.id, call.arguments)
                reply = ChatMessage.tool(result, tool_call_id=call.id, name=call.name)
                messages.append(reply)
                turn.append(reply)
        raise StepLimitExceeded(
            f"agent {self.name!r} reached max_steps={self.max_steps} without a final answer "
            f"(the model kept calling tools: {sorted(self.tools)!r})"
        )

    async def _call_tool(
        self, ctx: Context, name: str, call_id: str, arguments: dict[str, Any]
    ) -> str:
        tool = self.tools.get(name)

        async def live() -> dict[str, Any]:
            if tool is None:
                return {"error": f"unknown tool {name!r}; available: {sorted(self.tools)!r}"}
            try:
                value = await tool.invoke(arguments)
            except Exception as exc:  # the model hears about it and may try again
                return {"error": f"{type(exc).__name__}: {exc}"}
            return {"content": tool_result_to_text(value)}

        result = await ctx.invoke("tool", name, {"arguments": arguments, "call_id": call_id}, live)
        if "error" in result:
            return json.dumps({"error": result["error"]})
        return str(result.get("content", ""))
