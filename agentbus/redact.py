"""Keep secrets out of the journal, traces, logs and error messages.

:func:`redact` copies a JSON-ready value with the values of secret-looking keys
(``Authorization``, ``api_key``, ``password``, ``token``, ...) replaced by ``***``, and
:func:`redact_text` masks passwords in URLs and ``Bearer``/``Basic`` credentials in
free text. The runtime applies them to every model/tool call it records or traces
(``ctx.invoke``), so an API key passed in a request's headers never reaches the journal.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MASK", "is_secret_key", "redact", "redact_text"]

MASK = "***"

_SECRET_WORDS = (
    "authorization",
    "apikey",
    "api_key",
    "api-key",
    "password",
    "passwd",
    "secret",
    "token",
    "cookie",
    "credential",
    "private_key",
    "signing_key",
)
# scheme://user:password@host -> scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)")
# Authorization: Bearer abc / Basic abc (in logs, error messages, curl lines)
_AUTH_SCHEME = re.compile(r"(?P<head>\b(?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=-]{4,}")


def is_secret_key(name: str) -> bool:
    """Whether a mapping key names a secret (case-insensitive, ``-``/``_`` alike)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS) and not lowered.endswith(
        ("_tokens", "tokens")  # usage counters such as max_tokens, prompt_tokens
    )


def redact_text(text: str) -> str:
    """``text`` with URL passwords and ``Bearer``/``Basic`` credentials masked."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _AUTH_SCHEME.sub(lambda m: m.group("head") + MASK, text)


def redact(value: Any) -> Any:
    """A copy of a JSON-ready ``value`` with secret values masked (see module doc)."""
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and is_secret_key(k) and v else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
