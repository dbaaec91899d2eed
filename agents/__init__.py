"""Reusable agent kinds and the model clients they use.

Model clients implement :class:`ChatModel`: :class:`OpenAIChatModel` for OpenAI and any
OpenAI-compatible server, :class:`OfflineModel` for deterministic runs without a model;
:class:`LLMAgent` runs a tool-call loop with memory and structured output;
:func:`model_from_env` picks one from the environment. Functions become tools with :func:`tool`.
Every model call an agent makes goes through :func:`call_model`, which journals it (and on
replay returns the recorded answer).

Importing this package needs neither Redis nor a network, and the OpenAI SDK is only loaded
when :class:`OpenAIChatModel` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentbus.agents.call import call_model
from agentbus.agents.env import model_from_env
from agentbus.agents.errors import (
    ModelAuthError,
    ModelError,
    ModelRateLimited,
    ModelRequestError,
    ModelResponseError,
    ModelTimeout,
    ModelUnavailable,
    ToolArgumentsError,
)
from agentbus.agents.llm import LLMAgent, LLMResult, Memory, Prompt, Reply, StepLimitExceeded
from agentbus.agents.model import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    ChatResponse,
    ToolCall,
    ToolSpec,
    Usage,
)
from agentbus.agents.offline import OFFLINE_LABEL, OfflineModel
from agentbus.agents.tools import Tool, tool, tool_result_to_text

if TYPE_CHECKING:
    from agentbus.agents.openai_model import OpenAIChatModel

__all__ = [
    "OFFLINE_LABEL",
    "ChatMessage",
    "ChatModel",
    "ChatRequest",
    "ChatResponse",
    "LLMAgent",
    "LLMResult",
    "Memory",
    "ModelAuthError",
    "ModelError",
    "ModelRateLimited",
    "ModelRequestError",
    "ModelResponseError",
    "ModelTimeout",
    "ModelUnavailable",
    "OfflineModel",
    "OpenAIChatModel",
    "Prompt",
    "Reply",
    "StepLimitExceeded",
    "Tool",
    "ToolArgumentsError",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "call_model",
    "model_from_env",
    "tool",
    "tool_result_to_text",
]


def __getattr__(name: str) -> Any:
    # The OpenAI SDK takes most of a second to import; offline runs and the CLI need not pay.
    if name == "OpenAIChatModel":
        from agentbus.agents.openai_model import OpenAIChatModel

        return OpenAIChatModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
