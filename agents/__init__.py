"""Reusable agent kinds and the model clients they use.

Model clients implement :class:`ChatModel`: :class:`OpenAIChatModel` for OpenAI and any
OpenAI-compatible server, :class:`OfflineModel` for deterministic runs without a model;
:func:`model_from_env` picks one from the environment. Functions become tools with :func:`tool`.

Importing this package needs neither Redis nor a network.
"""

from __future__ import annotations

from agents.errors import (
    ModelAuthError,
    ModelError,
    ModelRateLimited,
    ModelRequestError,
    ModelResponseError,
    ModelTimeout,
    ModelUnavailable,
    ToolArgumentsError,
)
from agents.model import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    ChatResponse,
    ToolCall,
    ToolSpec,
    Usage,
    model_from_env,
)
from agents.offline import OFFLINE_LABEL, OfflineModel
from agents.openai_model import OpenAIChatModel
from agents.tools import Tool, tool, tool_result_to_text

__all__ = [
    "OFFLINE_LABEL",
    "ChatMessage",
    "ChatModel",
    "ChatRequest",
    "ChatResponse",
    "ModelAuthError",
    "ModelError",
    "ModelRateLimited",
    "ModelRequestError",
    "ModelResponseError",
    "ModelTimeout",
    "ModelUnavailable",
    "OfflineModel",
    "OpenAIChatModel",
    "Tool",
    "ToolArgumentsError",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "model_from_env",
    "tool",
    "tool_result_to_text",
]
