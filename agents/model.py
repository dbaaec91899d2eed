"""Provider-neutral chat types and the :class:`ChatModel` protocol.

Agents talk to language models only through these types, so a run can be journaled and replayed
whatever the provider: every type here round-trips through ``model_dump(mode="json")`` and
``model_validate``, which is how a recorded response is substituted on replay.

Implementations: :class:`agents.openai_model.OpenAIChatModel` (any OpenAI-compatible server) and
:class:`agents.offline.OfflineModel` (deterministic, no network); :func:`agents.env.model_from_env`
picks one. This module imports neither, so both can import it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentbus.agents.errors import ModelResponseError

__all__ = [
    "DEFAULT_MODEL",
    "ChatMessage",
    "ChatModel",
    "ChatRequest",
    "ChatResponse",
    "Role",
    "ToolCall",
    "ToolSpec",
    "Usage",
]

DEFAULT_MODEL = "gpt-4o-mini"
"""Model name used when neither ``AGENTBUS_MODEL`` nor ``OPENAI_MODEL`` is set."""

Role = Literal["system", "user", "assistant", "tool"]

# OpenAI's limit for function and response-format names; other providers accept a superset.
_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

_M = TypeVar("_M", bound=BaseModel)


class _Record(BaseModel):
    # extra="forbid" turns a misspelt field into an error instead of a silently dropped value.
    model_config = ConfigDict(extra="forbid")


class ToolCall(_Record):
    """A model's request to call a tool. ``arguments`` is the parsed JSON object."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolSpec(_Record):
    """A tool offered to the model: its name, what it does, and a JSON schema of its parameters."""

    name: str = Field(pattern=_NAME_PATTERN)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ChatMessage(_Record):
    """One message of a conversation.

    ``tool_calls`` is set on assistant messages that call tools; ``tool_call_id`` (and usually
    ``name``) on ``tool`` messages carrying a tool's result. Raises ``pydantic.ValidationError``
    when a ``tool`` message lacks its ``tool_call_id``.
    """

    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _check_role_fields(self) -> Self:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs the tool_call_id of the call it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"only assistant messages carry tool_calls, not {self.role!r}")
        return self

    @classmethod
    def system(cls, content: str) -> ChatMessage:
        """A system (instructions) message."""
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str) -> ChatMessage:
        """A user message."""
        return cls(role="user", content=content)

    @classmethod
    def assistant(
        cls, content: str | None = None, *, tool_calls: list[ToolCall] | None = None
    ) -> ChatMessage:
        """An assistant message: text, tool calls, or both."""
        return cls(role="assistant", content=content, tool_calls=tool_calls)

    @classmethod
    def tool(cls, content: str, *, tool_call_id: str, name: str | None = None) -> ChatMessage:
        """The result of the tool call ``tool_call_id``, as text."""
        return cls(role="tool", content=content, tool_call_id=tool_call_id, name=name)


class Usage(_Record):
    """Tokens consumed by one model call."""

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)

    @property
    def total(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


class ChatRequest(_Record):
    """What to ask a model.

    ``response_schema`` (a JSON schema, e.g. ``MyModel.model_json_schema()``) asks for structured
    output: the reply's content is then a JSON document valid against it, named
    ``response_schema_name``. ``model`` overrides the client's default model for this call.
    """

    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ToolSpec] = Field(default_factory=list)
    response_schema: dict[str, Any] | None = None
    response_schema_name: str = Field(default="response", pattern=_NAME_PATTERN)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, gt=0)
    model: str | None = None

    @model_validator(mode="after")
    def _check_unique_tools(self) -> Self:
        names = [spec.name for spec in self.tools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tool names must be unique; offered twice: {duplicates!r}")
        return self


class ChatResponse(_Record):
    """A model's answer, with what it cost and how it was obtained.

    ``attempts`` counts the HTTP requests sent (retries included); ``offline`` is true when the
    answer came from :class:`agents.offline.OfflineModel` rather than a real model.
    """

    message: ChatMessage
    usage: Usage = Field(default_factory=Usage)
    model: str
    provider: str
    finish_reason: str | None = None
    latency_ms: float = Field(default=0.0, ge=0.0)
    attempts: int = Field(default=1, ge=1)
    offline: bool = False

    @property
    def text(self) -> str:
        """The message content, or ``""`` when the model only called tools."""
        return self.message.content or ""

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls of the message (empty when there are none)."""
        return list(self.message.tool_calls or [])

    def parse_as(self, model_type: type[_M]) -> _M:
        """Validate the content (structured output) as ``model_type``.

        Raises :class:`~agents.errors.ModelResponseError` when the content is missing, is not
        JSON, or does not validate.
        """
        if self.message.content is None:
            raise ModelResponseError(
                self.model, f"expected JSON for {model_type.__name__}, got no content"
            )
        try:
            return model_type.model_validate_json(self.message.content)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ModelResponseError(
                self.model,
                f"content does not validate as {model_type.__name__}: "
                f"{exc.error_count()} error(s), the first at {_location(first['loc'])!r}: "
                f"{first['msg']}; content {_clip(self.message.content)!r}",
            ) from exc


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@runtime_checkable
class ChatModel(Protocol):
    """A chat model client. Implement it without inheriting; ``isinstance`` works.

    ``name`` is the default model name and ``provider`` names who serves it (``"openai"``,
    ``"offline"``, ...); both are recorded with every response.
    """

    name: str
    provider: str

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send one request and return the answer.

        Raises a :class:`~agents.errors.ModelError`: ``ModelUnavailable`` (or
        ``ModelRateLimited``) when retries are exhausted, ``ModelTimeout``, ``ModelAuthError``,
        ``ModelRequestError`` or ``ModelResponseError``. Cancellation abandons the request in
        flight and any pending retry.
        """
        ...

    async def aclose(self) -> None:
        """Release connections. Calling it twice is harmless."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
