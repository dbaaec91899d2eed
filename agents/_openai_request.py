"""Translate provider-neutral requests into OpenAI's chat-completion parameters.

Kept apart from the client so the protocol mapping (messages, tools, strict JSON schemas) can be
read and tested without the retry and error machinery.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
    ChatCompletionToolMessageParam,
)
from openai.types.shared_params import FunctionDefinition

from agentbus.agents.model import ChatMessage, ToolCall

__all__ = ["message_param", "strict_schema", "tool_param"]


def message_param(message: ChatMessage) -> ChatCompletionMessageParam:
    """``message`` as the SDK's message parameter for its role."""
    content = message.content or ""
    if message.role == "system":
        return {"role": "system", "content": content}
    if message.role == "user":
        if message.name:
            return {"role": "user", "content": content, "name": message.name}
        return {"role": "user", "content": content}
    if message.role == "tool":
        tool: ChatCompletionToolMessageParam = {
            "role": "tool",
            "content": content,
            "tool_call_id": message.tool_call_id or "",
        }
        return tool
    assistant: ChatCompletionAssistantMessageParam = {
        "role": "assistant",
        "content": message.content,
    }
    if message.tool_calls:
        assistant["tool_calls"] = [_tool_call_param(call) for call in message.tool_calls]
    return assistant


def _tool_call_param(call: ToolCall) -> ChatCompletionMessageFunctionToolCallParam:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
    }


def tool_param(
    name: str, description: str, parameters: dict[str, Any]
) -> ChatCompletionFunctionToolParam:
    """A function tool offered to the model."""
    function: FunctionDefinition = {"name": name, "parameters": parameters}
    if description:
        function["description"] = description
    return {"type": "function", "function": function}


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` that OpenAI's strict structured-output mode accepts.

    Strict mode wants every object closed (``additionalProperties: false``), every property
    required, and no ``$ref`` beside other keywords; pydantic's schemas are none of these. Making
    a defaulted field required only means the model always fills it in, and the answer still
    validates against the original model. Idempotent.
    """
    root = copy.deepcopy(schema)
    return _make_strict(root, root, depth=0)


def _make_strict(node: dict[str, Any], root: dict[str, Any], depth: int) -> dict[str, Any]:
    if depth > 64:  # a self-referencing $ref chain; leave the rest alone
        return node
    for key in ("$defs", "definitions"):
        defs = node.get(key)
        if isinstance(defs, dict):
            for name, sub in defs.items():
                if isinstance(sub, dict):
                    defs[name] = _make_strict(sub, root, depth + 1)
    if node.get("type") == "object" and "additionalProperties" not in node:
        node["additionalProperties"] = False
    properties = node.get("properties")
    if isinstance(properties, dict):
        node["required"] = list(properties)
        for name, sub in properties.items():
            if isinstance(sub, dict):
                properties[name] = _make_strict(sub, root, depth + 1)
    items = node.get("items")
    if isinstance(items, dict):
        node["items"] = _make_strict(items, root, depth + 1)
    for key in ("anyOf", "oneOf"):
        variants = node.get(key)
        if isinstance(variants, list):
            node[key] = [
                _make_strict(v, root, depth + 1) if isinstance(v, dict) else v for v in variants
            ]
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        node.pop("allOf")
        node.update({**_make_strict(all_of[0], root, depth + 1), **node})
    if "default" in node and node["default"] is None:
        node.pop("default")
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        target = _resolve_ref(root, ref)
        if target is not None:
            node.pop("$ref")
            # The node's own keywords (a description, say) win over the referenced ones.
            return _make_strict({**copy.deepcopy(target), **node}, root, depth + 1)
    return node


def _resolve_ref(root: dict[str, Any], ref: str) -> dict[str, Any] | None:
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, dict) else None
