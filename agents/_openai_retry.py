"""When the OpenAI client retries: transient failures and the server's Retry-After."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from datetime import UTC, datetime

import openai

__all__ = ["RETRY_AFTER_STATUSES", "is_transient", "retry_after"]

RETRY_AFTER_STATUSES = frozenset({429, 503})
"""Statuses whose Retry-After header is honoured: the two where servers send it meaningfully."""


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: connection trouble, timeouts, 429 and 5xx."""
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError is one too
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return False


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait, from Retry-After(-Ms); ``None`` when absent or bad.

    Retry-After is delta-seconds or an HTTP date (RFC 9110 §10.2.3); OpenAI also sends the
    non-standard ``retry-after-ms`` and fractional seconds, which are accepted.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            seconds = float(raw_ms) / 1000.0
        except ValueError:
            pass
        else:
            return max(seconds, 0.0) if math.isfinite(seconds) else None
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None
