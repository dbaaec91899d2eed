"""Keep secrets out of everything agentbus writes: journal, logs, spans, errors, CLI, exports.

One set of rules, applied at every boundary where agentbus writes text:

- :func:`redact_text` masks secrets in free text: URL passwords (``scheme://user:***@host``,
  also when the password holds ``/``, ``@`` or ``:``), secret query parameters
  (``?password=***``, ``ssl_password=``, ``api_key=``, ``token=``, ``access_token=``,
  ``secret=``, ``key=``, ``sig=``, ...), ``name=value`` / ``"name": "value"`` pairs with a
  secret-looking name, ``Authorization``/``Bearer``/``Basic`` credentials and API keys shaped
  like OpenAI's (``sk-...``).
- :func:`redact` copies a JSON-ready value with the values of secret-looking keys
  (``Authorization``, ``api_key``, ``password``, ``token``, ...) replaced by ``***`` and every
  string passed through :func:`redact_text`.
- :func:`redact_url` shows a URL with its password and secret parameters masked.
- :class:`RedactingFilter` masks log records (installed on the ``agentbus`` loggers when this
  module is imported); :func:`masked_output` masks ``sys.stdout``/``sys.stderr`` (the CLI).

Masking is by names and shapes; a secret that looks like neither (a bare password in a
sentence) is not recognised. It is idempotent: masking masked text changes nothing.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = [
    "MASK",
    "RedactingFilter",
    "install_log_redaction",
    "is_secret_key",
    "masked_output",
    "redact",
    "redact_text",
    "redact_url",
    "url_error",
]

MASK = "***"

# A key is secret when one of its words (split at _ - . and camelCase) is one of these...
_SECRET_WORDS = frozenset(
    {
        "authorization",
        "apikey",
        "password",
        "passwords",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "cookie",
        "credential",
        "credentials",
        "privatekey",
    }
)
# ... or two neighbouring words are one of these (api_key, x-api-key, apiKey, ...).
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"),
        ("api", "keys"),
        ("private", "key"),
        ("access", "key"),
        ("signing", "key"),
        ("signing", "keys"),
        ("session", "key"),
        ("set", "cookie"),
    }
)
# Names that are secret only as URL query parameters (too common as words elsewhere).
_SECRET_PARAMS = frozenset({"key", "pass", "auth", "sig", "signature", "code_verifier"})
# Schemes whose URLs never hold '@' in their path: everything before the last '@' is userinfo.
_REDIS_SCHEMES = frozenset(
    {"redis", "rediss", "unix", "valkey", "valkeys"}
    | {f"{s}+{kind}" for s in ("redis", "rediss") for kind in ("cluster", "sentinel")}
)

# Cheap test first: most strings (ids, topics, prose) hold none of these, and then no
# pattern below can match.
_TRIGGERS = (
    "://", "pass", "pwd", "secret", "token", "key", "auth", "cookie", "credential",
    "bearer", "basic", "sk-", "sig",
)  # fmt: skip
# scheme://USERINFO@ -- greedy up to the last '@' of the URL (quotes and spaces end it).
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*)://(?P<info>[^\s'\"<>]*)@")
# ?name=value / &name=value / ;name=value in URLs
_QUERY_PARAM = re.compile(
    r"(?P<head>[?&;](?P<name>[A-Za-z0-9_.\-\[\]%]+)=)(?P<value>[^&#\s'\"<>]+)"
)
# name=value, name: value, "name": "value", 'name': 'value' with a secret-looking name
_NAMED_VALUE = re.compile(
    r"(?P<head>(?P<name>\b[A-Za-z][\w.-]*)(?P<nq>[\"']?)[ \t]*[=:][ \t]*"
    r"(?P<scheme>(?:Bearer|Basic|Token|Digest)[ \t]+)?)"
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s,;&'\"{}()\[\]<>]+)"
)
# Authorization: Bearer abc / Basic abc (in logs, error messages, curl lines)
_AUTH_SCHEME = re.compile(r"(?P<head>\b(?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=-]{4,}")
# API keys shaped like OpenAI's (sk-..., sk-proj-...)
_API_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{12,}")


@functools.lru_cache(maxsize=4096)
def _words(name: str) -> tuple[str, ...]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return tuple(w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w)


@functools.lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    """Whether a mapping key or parameter name names a secret.

    Goes by words, so ``ssl_password``, ``access_token``, ``x-api-key`` and ``apiKey`` are
    secret while usage counters such as ``max_tokens`` and ``prompt_tokens`` are not.
    """
    words = _words(name)
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


@functools.lru_cache(maxsize=4096)
def _names_secret(name: str) -> bool:
    # In free text only a name that ends in a secret word counts ("api_key=", "token:"),
    # so that "agent 'secrets-desk': started" and "password_file=..." stay as written.
    words = _words(name)
    return bool(words) and (words[-1] in _SECRET_WORDS or tuple(words[-2:]) in _SECRET_PAIRS)


def _is_secret_param(name: str) -> bool:
    return is_secret_key(name) or name.lower() in _SECRET_PARAMS


def _mask_info(scheme: str, info: str) -> str | None:
    """The masked userinfo of ``scheme://INFO@...``; None when INFO is not userinfo."""
    cut = re.search(r"[/?#]", info)
    if cut is not None and scheme.lower() not in _REDIS_SCHEMES:
        # '/', '?' or '#' before the '@': a path or query holding '@' (https://host/@me)
        # unless what precedes it is user:password (a password with a raw '/').
        _, colon, rest = info[: cut.start()].partition(":")
        if not colon or not rest or rest.isdigit():
            return None
    user, colon, _ = info.partition(":")
    if colon and not re.search(r"[/?#]", user):
        return f"{user}:{MASK}"
    return MASK


def _userinfo(match: re.Match[str]) -> str:
    scheme = match.group("scheme")
    masked = _mask_info(scheme, match.group("info"))
    return match.group(0) if masked is None else f"{scheme}://{masked}@"


def _query(match: re.Match[str]) -> str:
    name = match.group("name")
    if match.group("value") == MASK or not _is_secret_param(name):
        return match.group(0)
    return match.group("head") + MASK


def _named(match: re.Match[str]) -> str:
    value = match.group("value")
    if not _names_secret(match.group("name")):
        # "url: token=abc": the value may hold a pair of its own.
        return match.group("head") + _NAMED_VALUE.sub(_named, value)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('head')}{quote}{MASK}{quote}"


def redact_text(text: str) -> str:
    """``text`` with the secrets it shows masked as ``***`` (see the module doc)."""
    lowered = text.lower()
    if not any(word in lowered for word in _TRIGGERS):
        return text
    text = _URL_USERINFO.sub(_userinfo, text)
    text = _QUERY_PARAM.sub(_query, text)
    text = _AUTH_SCHEME.sub(lambda m: m.group("head") + MASK, text)
    text = _NAMED_VALUE.sub(_named, text)
    return _API_KEY.sub("sk-" + MASK, text)


def redact_url(url: str) -> str:
    """``url`` with its password (userinfo or query parameter) replaced by ``***``.

    Unlike :func:`redact_text` it knows the whole string is one URL, so a password with a
    space or a quote in it is masked too.
    """
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest and re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*", scheme):
        info, _, host = rest.rpartition("@")
        masked = _mask_info(scheme, info)
        if masked is not None:
            url = f"{scheme}://{masked}@{host}"
    return redact_text(url)


def url_error(url: str, error: object) -> str:
    """The text of ``error`` (raised parsing ``url``) with the URL's secrets masked.

    A password holding '/', '?' or '#' unencoded derails URL parsers, which then quote a
    piece of it as the port or the path; such an error is replaced by advice instead.
    """
    text = redact_text(str(error))
    _, sep, rest = url.partition("://")
    info = rest.rpartition("@")[0] if sep else ""
    password = info.partition(":")[2] if ":" in info else info
    pieces = [p for p in re.split(r"[/?#@:]", password) if p]
    if re.search(r"[/?#]", password) or any(p in text for p in pieces if len(p) > 1):
        return (
            "the URL cannot be parsed; percent-encode special characters in the user name "
            "and password ('/' as %2F, '@' as %40, ':' as %3A, '?' as %3F, '#' as %23)"
        )
    return text


def redact(value: Any) -> Any:
    """A copy of a JSON-ready ``value`` with secrets masked (see the module doc)."""
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and v and is_secret_key(k) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks each record's message, exception and stack text.

    On a logger it rewrites the record itself, so every handler that later sees it (the
    ancestors' too) gets the masked text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # a bad format string: let the handler report it as usual
        masked = redact_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


_FILTER = RedactingFilter()

#: The loggers agentbus writes to (agents' own ``agentbus.agent.NAME`` loggers get the
#: filter when they are made). A logger's filter does not see its children's records, so
#: each is named here.
LOGGERS = (
    "agentbus",
    "agentbus.runtime",
    "agentbus.metrics",
    "agentbus.cli",
    "agentbus.retention",
    "agentbus.archive",
    "agents",
)


def install_log_redaction(*targets: logging.Logger | logging.Handler) -> None:
    """Add the masking filter to each logger or handler (once)."""
    for target in targets:
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)


class _MaskedStream:
    """A text stream that masks what is written through it, then passes it on."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact_text(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def masked_output() -> Iterator[None]:
    """Mask everything written to ``sys.stdout`` and ``sys.stderr`` inside the block."""
    saved = sys.stdout, sys.stderr
    sys.stdout = _MaskedStream(saved[0])
    sys.stderr = _MaskedStream(saved[1])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


install_log_redaction(*(logging.getLogger(name) for name in LOGGERS))
