"""Exceptions raised by model clients and tools.

Every failure of a model call or a tool invocation derives from :class:`ModelError`, itself an
:class:`agentbus.errors.AgentBusError`. Errors of the HTTP client and the provider SDK are
translated into these in :mod:`agents.openai_model` and chained with ``from exc``::

    AgentBusError
    └── ModelError                  a model call or tool invocation failed
        ├── ModelUnavailable        the world broke it: unreachable, 5xx, retries exhausted
        │   └── ModelRateLimited    the provider kept answering 429 Too Many Requests
        ├── ModelTimeout            no response within the timeout (also a ``TimeoutError``)
        ├── ModelAuthError          the provider rejected the credentials (401/403)
        ├── ModelRequestError       the provider rejected the request (other 4xx): not retried
        ├── ModelResponseError      the response is unusable: malformed, refused, invalid JSON
        └── ToolArgumentsError      a model called a tool with arguments that do not validate

Messages say what was wrong, what is allowed and the offending value. No message ever contains
an API key.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentbus.errors import AgentBusError

__all__ = [
    "ModelAuthError",
    "ModelError",
    "ModelRateLimited",
    "ModelRequestError",
    "ModelResponseError",
    "ModelTimeout",
    "ModelUnavailable",
    "ToolArgumentsError",
]


def _status_text(status_code: int | None) -> str:
    return "a connection error" if status_code is None else f"HTTP {status_code}"


class ModelError(AgentBusError):
    """Root of every failure of a model call or tool invocation."""


class ModelUnavailable(ModelError, ConnectionError):
    """The model could not be reached, or kept failing with 5xx, for every allowed attempt.

    ``attempts`` is how many requests were sent, ``status_code`` the last HTTP status (``None``
    when the last attempt failed to connect).
    """

    def __init__(
        self, model: str, *, attempts: int, status_code: int | None, detail: str = ""
    ) -> None:
        why = f": {detail}" if detail else ""
        super().__init__(
            f"model {model!r} is unavailable: {attempts} attempt(s) failed, the last with "
            f"{_status_text(status_code)}{why} (429, 5xx, connection errors and timeouts are "
            "retried up to max_attempts)"
        )
        self.model = model
        self.attempts = attempts
        self.status_code = status_code


class ModelRateLimited(ModelUnavailable):
    """The provider answered 429 Too Many Requests on the last allowed attempt."""

    def __init__(
        self, model: str, *, attempts: int, retry_after: float | None = None, detail: str = ""
    ) -> None:
        hint = f"the server asked to wait {retry_after:g}s" if retry_after is not None else ""
        detail = "; ".join(part for part in (detail, hint) if part)
        super().__init__(model, attempts=attempts, status_code=429, detail=detail)
        self.retry_after = retry_after


class ModelTimeout(ModelError, TimeoutError):
    """No response within ``timeout`` seconds on the last allowed attempt."""

    def __init__(self, model: str, *, timeout: float, attempts: int) -> None:
        super().__init__(
            f"model {model!r} did not respond within {timeout:g}s "
            f"({attempts} attempt(s)); raise timeout= for long generations"
        )
        self.model = model
        self.timeout = timeout
        self.attempts = attempts


class ModelAuthError(ModelError):
    """The provider rejected the credentials (401) or the permission (403). Never retried.

    The message names the server and the environment variable to check, never the key.
    """

    def __init__(self, model: str, *, status_code: int, base_url: str) -> None:
        what = "rejected the API key" if status_code == 401 else "denied access"
        super().__init__(
            f"the server at {base_url!r} {what} for model {model!r} (HTTP {status_code}); "
            "check api_key= or OPENAI_API_KEY and the key's permissions"
        )
        self.model = model
        self.status_code = status_code
        self.base_url = base_url


class ModelRequestError(ModelError):
    """The provider rejected the request itself (4xx other than 401/403/429). Never retried.

    Typical causes: an unknown model name, a schema the provider does not accept, a context
    that is too long.
    """

    def __init__(self, model: str, *, status_code: int, detail: str) -> None:
        super().__init__(
            f"the provider rejected the request to model {model!r} with HTTP {status_code}: "
            f"{detail}"
        )
        self.model = model
        self.status_code = status_code
        self.detail = detail


class ModelResponseError(ModelError):
    """The model answered, but the answer cannot be used.

    Malformed body, missing choices, a refusal, tool-call arguments that are not a JSON object,
    structured output that does not match the requested schema.
    """

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model {model!r} returned an unusable response: {reason}")
        self.model = model
        self.reason = reason


class ToolArgumentsError(ModelError):
    """A tool was invoked with arguments that do not validate against its parameters.

    ``problems`` holds one ``"field: what is wrong"`` line per bad field; the message lists them
    so it can be handed back to the model as the tool result.
    """

    def __init__(self, tool: str, problems: Sequence[str]) -> None:
        super().__init__(f"invalid arguments for tool {tool!r}: " + "; ".join(problems))
        self.tool = tool
        self.problems = list(problems)
