"""The wire format: a CloudEvents 1.0 event in JSON structured mode.

Required attributes are ``specversion``, ``id``, ``source`` and ``type``; agentbus adds
the extensions ``topic``, ``runid``, ``causationid``, ``correlationid``, ``replyto``,
``partitionkey``, ``traceparent`` and ``tracestate`` (lowercase alphanumerics, as the
spec demands). Encoding is JSON only; nothing is ever pickled.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .errors import DecodeError, MessageTooLarge, UsageError
from .message import Message, lookup_type

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "EXTENSIONS",
    "Envelope",
    "decode_data",
    "new_id",
]

SPECVERSION = "1.0"
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
CONTENT_TYPE = "application/json"

#: The CloudEvents extension attributes agentbus understands.
EXTENSIONS = (
    "topic",
    "runid",
    "causationid",
    "correlationid",
    "replyto",
    "partitionkey",
    "traceparent",
    "tracestate",
)
_OPTIONAL = ("time", "subject", "datacontenttype", "dataschema")
_REQUIRED = ("specversion", "id", "source", "type")
_KNOWN = frozenset(_REQUIRED + _OPTIONAL + EXTENSIONS + ("data",))
_ATTRIBUTES = _OPTIONAL + EXTENSIONS
_STRINGS = _REQUIRED + _OPTIONAL + EXTENSIONS

# Every event is encoded once and decoded once per delivery: one encoder, built once.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every event needs an id: two base-32 digits (10 bits) per step halves the work.
_DIGIT_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_PAIR_SHIFTS = tuple(range(120, -10, -10))


def new_id() -> str:
    """A ULID: 26 Crockford base-32 characters, sortable by creation millisecond, unique."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join([_DIGIT_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def _now_rfc3339() -> str:
    global _second
    now = time.time()
    whole = int(now)
    if _second[0] != whole:  # formatting the date is the slow part: once per second
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((now - whole) * 1_000_000):06d}Z"


@dataclass(slots=True)
class Envelope:
    """One event. ``data`` holds the message as JSON-ready Python values."""

    type: str
    source: str
    data: Any = None
    id: str = field(default_factory=new_id)
    time: str | None = field(default_factory=_now_rfc3339)
    topic: str | None = None
    runid: str | None = None
    causationid: str | None = None
    correlationid: str | None = None
    replyto: str | None = None
    partitionkey: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    subject: str | None = None
    dataschema: str | None = None
    datacontenttype: str | None = CONTENT_TYPE
    #: Other extension attributes (for example a signature), kept as received.
    extensions: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_message(cls, message: Message, *, source: str, **attributes: Any) -> Envelope:
        """Wrap ``message``; ``attributes`` set any envelope attribute or extension."""
        if not isinstance(message, Message):
            raise UsageError(
                f"events carry agentbus.Message instances, got {type(message).__name__!r}"
            )
        return cls(
            type=message.message_type,
            source=source,
            data=message.model_dump(mode="json"),
            **attributes,
        )

    def to_dict(self) -> dict[str, Any]:
        """The CloudEvents JSON structured-mode object (absent attributes omitted)."""
        out: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        for name in _ATTRIBUTES:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.extensions:
            out.update(self.extensions)
        if self.data is not None:
            out["data"] = self.data
        return out

    def encode(self, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> bytes:
        """Serialise to UTF-8 JSON. Raises :class:`MessageTooLarge` past ``max_bytes``."""
        raw = _ENCODER.encode(self.to_dict()).encode()
        if len(raw) > max_bytes:
            raise MessageTooLarge(len(raw), max_bytes, self.type)
        return raw

    @classmethod
    def from_dict(cls, obj: Any) -> Envelope:
        """Validate a decoded JSON object. Raises :class:`DecodeError` with the reason."""
        if not isinstance(obj, dict):
            raise DecodeError(
                "not a CloudEvent", f"expected a JSON object, got {type(obj).__name__}"
            )
        get = obj.get
        missing = [name for name in _REQUIRED if not get(name)]
        if missing:
            raise DecodeError("missing CloudEvents attribute", ", ".join(missing))
        if obj["specversion"] != SPECVERSION:
            raise DecodeError(
                "unsupported specversion", f"{obj['specversion']!r} (supported: {SPECVERSION!r})"
            )
        for name in _STRINGS:
            value = get(name)
            if value is not None and not isinstance(value, str):
                raise DecodeError("invalid CloudEvents attribute", f"{name} must be a string")
        # Usually every key is a known attribute: skip building the extras then.
        extras = {} if obj.keys() <= _KNOWN else {k: v for k, v in obj.items() if k not in _KNOWN}
        attrs = {name: get(name) for name in _ATTRIBUTES}
        return cls(
            type=obj["type"],
            source=obj["source"],
            id=obj["id"],
            data=obj.get("data"),
            extensions=extras,
            **attrs,
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> Envelope:
        """Parse JSON bytes. Raises :class:`DecodeError` for invalid UTF-8, JSON or attributes."""
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            raise DecodeError("invalid UTF-8", str(exc)) from exc
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DecodeError("invalid JSON", str(exc)) from exc
        return cls.from_dict(obj)


def decode_data(envelope: Envelope, expected: type[Message] | None = None) -> Message:
    """Turn ``envelope.data`` into its registered message class.

    Raises :class:`DecodeError` for an unknown type or a payload that fails validation.
    """
    cls = expected if expected is not None else lookup_type(envelope.type)
    if cls is None:
        raise DecodeError("unknown message type", repr(envelope.type))
    try:
        return cls.model_validate(envelope.data if envelope.data is not None else {})
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise DecodeError("invalid payload", f"{envelope.type}: {errors}") from exc
