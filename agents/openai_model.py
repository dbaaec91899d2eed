"""A :class:`~agents.model.ChatModel` for OpenAI and OpenAI-compatible servers.

Only this module and its two private helpers (``_openai_request``: the protocol mapping,
``_openai_retry``: what is retried and for how long) import ``openai`` or ``httpx``; every
exception they raise is translated here into an :mod:`agents.errors` exception, chained with
``from exc``.

Retries are ours, not the SDK's (it runs with ``max_retries=0``), so that the policy is the same
whatever SDK version is installed and the attempt count can be recorded in the journal.
"""

from __future__ import annotations

import json
import os
import time
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import urlsplit, urlunsplit

import httpx
import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageFunctionToolCall
from openai.types.shared_params import ResponseFormatJSONSchema
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from agentbus.agents.errors import (
    ModelAuthError,
    ModelError,
    ModelRateLimited,
    ModelRequestError,
    ModelResponseError,
    ModelTimeout,
    ModelUnavailable,
)
from agentbus.agents.model import (
    DEFAULT_MODEL,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ToolCall,
    Usage,
)
from agentbus.errors import UsageError
from agentbus.redact import redact_text

from ._openai_request import message_param, strict_schema, tool_param
from ._openai_retry import RETRY_AFTER_STATUSES, is_transient, retry_after

__all__ = ["OpenAIChatModel"]

OPENAI_BASE_URL = "https://api.openai.com/v1"

# Local servers (llama.cpp, vLLM, Ollama) ignore the key but the SDK insists on one; this is the
# conventional placeholder, so a request log makes plain that no real key was configured.
_NO_KEY = "sk-no-key-required"


class OpenAIChatModel:
    """Chat completions against OpenAI or any server speaking its protocol.

    Arguments left out fall back to ``OPENAI_MODEL`` (else ``"gpt-4o-mini"``),
    ``OPENAI_BASE_URL`` (else the OpenAI API) and ``OPENAI_API_KEY``. A server other than the
    OpenAI API may go without a key.

    Each call is sent up to ``max_attempts`` times: 429, 5xx, connection errors and timeouts are
    retried after an exponential backoff with jitter (``backoff_initial`` doubling up to
    ``backoff_max`` seconds), or after the server's ``Retry-After`` on 429/503 (capped at
    ``backoff_max``). Other 4xx are not retried. ``timeout`` bounds each attempt.

    ``provider`` is ``"openai"`` for the OpenAI API and ``"openai-compatible"`` for any other
    server. The client owns an ``httpx.AsyncClient`` unless ``http_client`` is given (closing
    that one stays the caller's business). Use ``async with`` or call :meth:`aclose`.

    Raises :class:`agentbus.errors.UsageError` for an invalid configuration, including a missing
    API key for the OpenAI API.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 20.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if not timeout > 0:
            raise UsageError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if max_attempts < 1:
            raise UsageError(f"max_attempts must be at least 1, got {max_attempts!r}")
        if backoff_initial < 0 or backoff_max < backoff_initial:
            raise UsageError(
                "backoff must satisfy 0 <= backoff_initial <= backoff_max, got "
                f"backoff_initial={backoff_initial!r}, backoff_max={backoff_max!r}"
            )
        self.name: str = model or os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
        self.base_url: str = (
            base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL
        ).rstrip("/")
        host = urlsplit(self.base_url).hostname or ""
        self.provider: str = "openai" if host == "api.openai.com" else "openai-compatible"
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max

        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        if not key:
            if self.provider == "openai":
                raise UsageError(
                    "no API key for the OpenAI API: pass api_key= or set OPENAI_API_KEY "
                    "(for a local server, set base_url= or OPENAI_BASE_URL)"
                )
            key = _NO_KEY
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._client = openai.AsyncOpenAI(
            api_key=key,
            base_url=self.base_url,
            timeout=timeout,
            max_retries=0,
            # openai>=3 annotates httpx2.AsyncClient here but accepts an httpx.AsyncClient too
            # (and openai 1.x takes nothing else); keeping httpx keeps one HTTP stack.
            http_client=cast(Any, self._http),
        )
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial
        )
        self._closed = False

    def __repr__(self) -> str:
        base_url = _strip_userinfo(self.base_url)
        return (
            f"{type(self).__name__}(model={self.name!r}, base_url={base_url!r}, "
            f"provider={self.provider!r})"
        )

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
        """Close the HTTP client if this model owns it. Calling it twice is harmless."""
        self._closed = True
        if self._owns_http:
            await self._http.aclose()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send ``request`` as one chat completion, retrying transient failures.

        ``latency_ms`` covers the whole call, waits between attempts included; ``attempts`` is
        the number of HTTP requests sent.

        Raises :class:`~agents.errors.ModelRateLimited` or :class:`~agents.errors.ModelUnavailable`
        when every attempt failed with 429, 5xx or a connection error,
        :class:`~agents.errors.ModelTimeout` when the last one timed out,
        :class:`~agents.errors.ModelAuthError` on 401/403, :class:`~agents.errors.ModelRequestError`
        on other 4xx, :class:`~agents.errors.ModelResponseError` when the answer is malformed, a
        refusal, or not the requested JSON, and :class:`agentbus.errors.UsageError` once closed.
        Cancellation abandons the request in flight and any pending retry.
        """
        if self._closed:
            raise UsageError(f"{self!r} is closed; create a new model client")
        model = request.model or self.name
        messages = [message_param(message) for message in request.messages]
        tools = [tool_param(spec.name, spec.description, spec.parameters) for spec in request.tools]
        response_format: ResponseFormatJSONSchema | openai.Omit = openai.omit
        if request.response_schema is not None:
            response_format = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.response_schema_name,
                    "schema": strict_schema(request.response_schema),
                    "strict": True,
                },
            }
        # OpenAI deprecated max_tokens (reasoning models reject it); compatible servers mostly
        # know only max_tokens.
        limit = openai.omit if request.max_tokens is None else request.max_tokens
        temperature = openai.omit if request.temperature is None else request.temperature
        on_openai = self.provider == "openai"

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        attempts = 0
        completion: object = None
        started = time.monotonic()
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    completion = await self._client.chat.completions.create(
                        model=model,
                        messages=messages,
                        tools=tools or openai.omit,
                        response_format=response_format,
                        temperature=temperature,
                        max_completion_tokens=limit if on_openai else openai.omit,
                        max_tokens=openai.omit if on_openai else limit,
                    )
        except openai.OpenAIError as exc:
            raise self._translate(exc, model, attempts) from exc
        except json.JSONDecodeError as exc:
            # The SDK decodes JSON bodies itself and lets a decoding error through unwrapped.
            raise ModelResponseError(model, f"the body is not valid JSON ({exc.msg})") from exc
        latency_ms = (time.monotonic() - started) * 1000.0
        return self._response(completion, request, model, latency_ms, attempts)

    def _wait(self, state: RetryCallState) -> float:
        """Seconds to wait before the next attempt: the server's Retry-After, else backoff."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, openai.APIStatusError) and exc.status_code in RETRY_AFTER_STATUSES:
            asked = retry_after(exc.response.headers)
            if asked is not None:
                return min(asked, self.backoff_max)
        return float(self._backoff(state))

    def _translate(self, exc: openai.OpenAIError, model: str, attempts: int) -> ModelError:
        """Map an SDK exception (after retries) to ours. Never includes the API key."""
        if isinstance(exc, openai.APITimeoutError):
            return ModelTimeout(model, timeout=self.timeout, attempts=attempts)
        if isinstance(exc, openai.APIConnectionError):
            cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "unknown"
            return ModelUnavailable(
                model,
                attempts=attempts,
                status_code=None,
                detail=f"cannot reach {_strip_userinfo(self.base_url)!r} ({cause})",
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = self._detail(exc.body)
            if status in (401, 403):
                return ModelAuthError(
                    model, status_code=status, base_url=_strip_userinfo(self.base_url)
                )
            if status == 429:
                return ModelRateLimited(
                    model,
                    attempts=attempts,
                    retry_after=retry_after(exc.response.headers),
                    detail=detail,
                )
            if status >= 500:
                return ModelUnavailable(model, attempts=attempts, status_code=status, detail=detail)
            return ModelRequestError(model, status_code=status, detail=detail)
        if isinstance(exc, openai.APIResponseValidationError):
            return ModelResponseError(model, f"the body does not match the protocol: {exc.message}")
        return ModelError(f"model {model!r}: {self._scrub(str(exc))}")

    def _detail(self, body: object) -> str:
        """The server's own error message, clipped and scrubbed of the key."""
        message = body.get("message") if isinstance(body, dict) else body
        return self._scrub(_clip(str(message))) if message else "no error message"

    def _scrub(self, text: str) -> str:
        # A server may echo the key in its error message; ours must never carry it.
        key = self._client.api_key
        return redact_text(text.replace(key, "***") if key else text)  # and URLs, tokens

    def _response(
        self,
        completion: object,
        request: ChatRequest,
        model: str,
        latency_ms: float,
        attempts: int,
    ) -> ChatResponse:
        """Turn a completion into a :class:`ChatResponse`, rejecting anything unusable."""
        if not isinstance(completion, ChatCompletion):
            # Without a JSON content type the SDK hands back the body as text.
            raise ModelResponseError(
                model, f"expected a chat completion object, got {_clip(str(completion))!r}"
            )
        try:
            if not completion.choices:
                raise ModelResponseError(model, "the completion has no choices")
            choice = completion.choices[0]
            reply = choice.message
            if reply.refusal:
                raise ModelResponseError(model, f"the model refused: {_clip(reply.refusal)!r}")
            tool_calls = [self._tool_call(call, model) for call in reply.tool_calls or []]
            usage = (
                Usage(
                    input_tokens=completion.usage.prompt_tokens,
                    output_tokens=completion.usage.completion_tokens,
                )
                if completion.usage is not None
                else Usage()
            )
            message = ChatMessage(
                role="assistant", content=reply.content, tool_calls=tool_calls or None
            )
            finish_reason = choice.finish_reason
            served_by = completion.model or model
        except ModelResponseError:
            raise
        except (AttributeError, TypeError, ValueError) as exc:
            # The SDK builds responses without validating them, so a body of the wrong shape
            # surfaces here as a missing attribute or a type mismatch.
            raise ModelResponseError(
                model, f"the completion does not have the expected shape ({exc})"
            ) from exc
        if request.response_schema is not None and not tool_calls:
            _check_json(message.content, model, finish_reason)
        return ChatResponse(
            message=message,
            usage=usage,
            model=str(served_by),
            provider=self.provider,
            finish_reason=finish_reason,
            latency_ms=latency_ms,
            attempts=attempts,
        )

    @staticmethod
    def _tool_call(call: object, model: str) -> ToolCall:
        if not isinstance(call, ChatCompletionMessageFunctionToolCall):
            raise ModelResponseError(
                model, f"only function tool calls are supported, got {_clip(str(call))!r}"
            )
        raw = call.function.arguments
        try:
            # Some servers send "" for a call without arguments.
            arguments = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise ModelResponseError(
                model,
                f"the arguments of tool call {call.function.name!r} are not JSON "
                f"({exc.msg}): {_clip(raw)!r}",
            ) from exc
        if not isinstance(arguments, dict):
            raise ModelResponseError(
                model,
                f"the arguments of tool call {call.function.name!r} must be a JSON object, "
                f"got {_clip(raw)!r}",
            )
        return ToolCall(id=call.id, name=call.function.name, arguments=arguments)


def _check_json(content: str | None, model: str, finish_reason: str | None) -> None:
    """Structured output must be one JSON document."""
    if content is None:
        raise ModelResponseError(model, "structured output was requested but the reply is empty")
    try:
        json.loads(content)
    except json.JSONDecodeError as exc:
        cut = " (cut off at max_tokens)" if finish_reason == "length" else ""
        raise ModelResponseError(
            model, f"structured output is not valid JSON{cut}: {_clip(content)!r}"
        ) from exc


def _strip_userinfo(url: str) -> str:
    """``url`` without ``user:password@``, which may hold a credential."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
