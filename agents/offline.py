"""A deterministic stand-in for a language model, so every example runs without one.

:class:`OfflineModel` does not understand anything. It follows three rules that are enough to
drive tool-calling and structured-output workflows end to end, and it says what it is: every
plain-text answer starts with ``"[offline model] "`` and every response has ``offline=True``.

1. Tools offered and no tool result yet in this turn: call the tool whose name and description
   share most words with the last user message (the only tool, when none matches), with
   arguments generated from its parameter schema.
2. Tool results present: answer ``"[offline model] Based on <tool>: <result>"``.
3. A response schema: answer JSON generated from the schema, which validates against it.

The same request always gives the same response (only ``latency_ms`` varies).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

from agentbus.agents.model import ChatMessage, ChatRequest, ChatResponse, ToolCall, ToolSpec, Usage
from agentbus.errors import UsageError

__all__ = ["OFFLINE_LABEL", "OfflineModel"]

OFFLINE_LABEL = "[offline model] "
"""The prefix of every plain-text answer of :class:`OfflineModel`."""

_TEXT_LIMIT = 200  # characters of user text or tool result quoted back
_MAX_DEPTH = 8  # recursive schemas: stop generating nested values here

# Words too common to say which tool a request is about.
_STOPWORDS = frozenset(
    (  # noqa: SIM905 - a word list reads better as text than as 45 quoted lines
        "a an and are as at be by can could do does for from get give how i in is it me my of on "
        "or please show some tell that the this to was what when where which who why with would "
        "you your"
    ).split()
)

# Valid examples for the string formats pydantic emits, so generated values pass validation.
_FORMAT_EXAMPLES = {
    "date": "2000-01-01",
    "date-time": "2000-01-01T00:00:00Z",
    "duration": "PT0S",
    "email": "offline@example.com",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "time": "00:00:00",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


class OfflineModel:
    """A :class:`~agents.model.ChatModel` that answers by rule, without network or randomness.

    ``script`` is a hook for tests: responses (or plain strings, returned as assistant text)
    handed out in order before the rules take over. ``temperature`` and ``max_tokens`` are
    ignored. Raises :class:`agentbus.errors.UsageError` when used after :meth:`aclose`.
    """

    name: str = "agentbus-offline"
    provider: str = "offline"

    def __init__(self, *, script: Iterable[ChatResponse | str] = ()) -> None:
        self._script: deque[ChatResponse | str] = deque(script)
        self._closed = False

    def __repr__(self) -> str:
        return f"OfflineModel(name={self.name!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Mark the model closed; there is nothing to release."""
        self._closed = True

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Answer ``request`` by the rules in the module docstring (or from the script)."""
        if self._closed:
            raise UsageError(f"{self!r} is closed; create a new model client")
        started = time.monotonic()
        if self._script:
            item = self._script.popleft()
            if isinstance(item, ChatResponse):
                return item
            message, finish_reason = ChatMessage.assistant(item), "stop"
        else:
            message, finish_reason = _answer(request)
        return ChatResponse(
            message=message,
            usage=Usage(
                input_tokens=sum(_count_words(m) for m in request.messages),
                output_tokens=_count_words(message),
            ),
            model=self.name,
            provider=self.provider,
            finish_reason=finish_reason,
            latency_ms=(time.monotonic() - started) * 1000.0,
            offline=True,
        )


def _answer(request: ChatRequest) -> tuple[ChatMessage, str]:
    messages = request.messages
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    user_text = (messages[last_user].content or "").strip() if last_user >= 0 else ""
    results = [m for m in messages[last_user + 1 :] if m.role == "tool"]

    if request.tools and not results:
        spec = _choose_tool(request.tools, user_text)
        if spec is not None:
            arguments = _Generator(
                spec.parameters,
                text_for=lambda name: _phrase(name, user_text),
                named=lambda name: _named_value(name, user_text),
            ).run()
            call_id = "call_" + _digest([spec.name, arguments, len(messages)])
            call = ToolCall(id=call_id, name=spec.name, arguments=arguments)
            return ChatMessage.assistant(tool_calls=[call]), "tool_calls"

    if results:
        text = " ".join(
            f"Based on {_tool_name(result, messages)}: {_clip(result.content or '')}"
            for result in results
        )
    else:
        text = f"Response to: {_clip(user_text)}" if user_text else "Nothing to respond to."

    if request.response_schema is not None:
        labelled = OFFLINE_LABEL + text
        value = _Generator(request.response_schema, text_for=lambda _name: labelled).run()
        return ChatMessage.assistant(json.dumps(value, ensure_ascii=False)), "stop"
    return ChatMessage.assistant(OFFLINE_LABEL + text), "stop"


def _choose_tool(tools: Sequence[ToolSpec], user_text: str) -> ToolSpec | None:
    """The tool sharing most words with the user's text (name words count double)."""
    wanted = _words(user_text)

    def score(spec: ToolSpec) -> int:
        return 2 * len(wanted & _words(spec.name)) + len(wanted & _words(spec.description))

    best = max(tools, key=score)  # max keeps the first of equals: order decides ties
    if score(best) > 0:
        return best
    return tools[0] if len(tools) == 1 else None


def _words(text: str) -> set[str]:
    """Lower-case word stems, split at camelCase, snake_case and punctuation, no stopwords."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    words = re.findall(r"[a-z0-9]+", spaced.lower())
    return {_stem(word) for word in words if word not in _STOPWORDS and len(word) > 1}


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _named_value(name: str, text: str) -> str | None:
    """The value written after ``name:`` or ``name=`` in the text, quoted or a single word."""
    pattern = rf"\b{re.escape(name)}\s*[:=]\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s,;]+))"
    match = re.search(pattern, text, flags=re.IGNORECASE)
    if match is None:
        return None
    return next(group for group in match.groups() if group is not None).rstrip(".!?")


def _phrase(name: str, text: str) -> str:
    """A string argument: the value named in the text, else its first quoted phrase, else all."""
    named = _named_value(name, text)
    if named is not None:
        return named
    # Straight or curly quotes; a single quote only counts outside a word, so that the
    # apostrophe of "don't" does not open a phrase.
    quoted = re.search(r"\"([^\"]+)\"|\u201c([^\u201d]+)\u201d|(?<!\w)'([^']+)'(?!\w)", text)
    if quoted is None:
        return text
    return next(group for group in quoted.groups() if group is not None)


def _tool_name(result: ChatMessage, messages: Sequence[ChatMessage]) -> str:
    if result.name:
        return result.name
    for message in messages:
        for call in message.tool_calls or []:
            if call.id == result.tool_call_id:
                return call.name
    return "a tool"


class _Generator:
    """Builds a value that validates against a JSON schema (the subset pydantic emits).

    ``text_for(name)`` supplies strings for the property ``name``; ``named(name)`` may supply
    the raw text of a value given by name (tool arguments spelled out by the user).
    """

    def __init__(
        self,
        schema: dict[str, Any],
        *,
        text_for: Callable[[str], str],
        named: Callable[[str], str | None] = lambda _name: None,
    ) -> None:
        self._root = schema
        self._text_for = text_for
        self._named = named

    def run(self) -> Any:
        return self._value(self._root, "", 0)

    def _value(self, schema: dict[str, Any], name: str, depth: int) -> Any:
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        named = self._named(name) if name else None
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            for option in schema["enum"]:
                if named is not None and str(option).lower() == named.lower():
                    return option
            return schema["enum"][0]
        if "default" in schema and named is None:
            return copy.deepcopy(schema["default"])
        for key in ("anyOf", "oneOf"):
            variants = [v for v in schema.get(key, []) if isinstance(v, dict)]
            if variants:
                chosen = next((v for v in variants if v.get("type") != "null"), variants[0])
                return self._value(chosen, name, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else ""
        if kind == "string":
            return self._string(schema, name)
        if kind in ("integer", "number"):
            return _number(schema, named, integer=kind == "integer")
        if kind == "boolean":
            return named is not None and named.lower() in ("true", "yes", "1")
        if kind == "null":
            return None
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "object":
            if depth >= _MAX_DEPTH:
                return {}
            properties = schema.get("properties", {})
            return {key: self._value(sub, key, depth + 1) for key, sub in properties.items()}
        return self._text_for(name)  # no type at all: any JSON validates, a string reads best

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Inline ``$ref`` and single-entry ``allOf``, keeping sibling keywords."""
        for _ in range(_MAX_DEPTH):
            ref = schema.get("$ref")
            all_of = schema.get("allOf")
            if isinstance(ref, str) and ref.startswith("#/"):
                target: Any = self._root
                for part in ref[2:].split("/"):
                    target = target.get(part, {}) if isinstance(target, dict) else {}
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                schema = {**(target if isinstance(target, dict) else {}), **rest}
            elif isinstance(all_of, list) and all_of:
                merged: dict[str, Any] = {}
                for part in all_of:
                    if isinstance(part, dict):
                        merged.update(self._resolve(part))
                rest = {k: v for k, v in schema.items() if k != "allOf"}
                schema = {**merged, **rest}
            else:
                break
        return schema

    def _string(self, schema: dict[str, Any], name: str) -> str:
        example = _FORMAT_EXAMPLES.get(str(schema.get("format", "")))
        if example is not None:
            return example
        text = self._named(name) if name else None
        if text is None:
            text = self._text_for(name)
        min_length = int(schema.get("minLength", 0))
        max_length = schema.get("maxLength")
        if len(text) < min_length:
            text = text + "." * (min_length - len(text))
        if isinstance(max_length, int):
            text = text[:max_length]
        return text

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):  # tuples
            return [self._value(sub, name, depth + 1) for sub in prefix if isinstance(sub, dict)]
        count = max(1, int(schema.get("minItems", 0)))
        max_items = schema.get("maxItems")
        if isinstance(max_items, int):
            count = min(count, max_items)
        if depth >= _MAX_DEPTH:
            count = int(schema.get("minItems", 0))
        items = schema.get("items")
        item_schema = items if isinstance(items, dict) else {}
        return [self._value(item_schema, name, depth + 1) for _ in range(count)]


def _number(schema: dict[str, Any], named: str | None, *, integer: bool) -> int | float:
    value: float = 0.0
    if named is not None:
        try:
            value = float(named)
        except ValueError:
            named = None
    if named is None and isinstance(schema.get("default"), int | float):
        value = float(schema["default"])
    minimum = schema.get("minimum")
    if isinstance(minimum, int | float) and value < minimum:
        value = float(minimum)
    exclusive = schema.get("exclusiveMinimum")
    if isinstance(exclusive, int | float) and value <= exclusive:
        value = math.floor(exclusive) + 1.0 if integer else float(exclusive) + 1.0
    maximum = schema.get("maximum")
    if isinstance(maximum, int | float) and value > maximum:
        value = float(maximum)
    return math.ceil(value) if integer else value


def _count_words(message: ChatMessage) -> int:
    """Our token count: whitespace-separated words of the content and tool-call arguments."""
    words = len((message.content or "").split())
    for call in message.tool_calls or []:
        words += len(json.dumps(call.arguments).split())
    return words


def _digest(value: Any) -> str:
    encoded = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:24]


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + "..."
