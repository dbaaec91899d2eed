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
from typing import Any, NoReturn

from pydantic import ValidationError

from . import _json
from .errors import DecodeError, MessageTooLarge, UsageError
from .message import Message, lookup_type
from .schema import VERSION_ATTRIBUTE, upcast, version_of

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "EXTENSIONS",
    "Envelope",
    "decode_data",
    "new_id",
    "validate_payload",
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
_ATTRIBUTES = _OPTIONAL + EXTENSIONS
_STRING_SET = frozenset(_REQUIRED + _OPTIONAL + EXTENSIONS)
_ATTRIBUTE_SET = frozenset(_ATTRIBUTES)
_KNOWN = _STRING_SET | {"data"}
_STRING_OR_NULL = frozenset({str, type(None)})
_ABSENT: Any = object()

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every event needs an id: two base-32 digits (10 bits) per step halves the work.
_DIGIT_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]


def new_id() -> str:
    """A ULID: 26 Crockford base-32 characters, sortable by creation millisecond, unique.

    Monotonic within a millisecond, as the ULID spec allows: the first id of a
    millisecond draws 80 random bits, the next ones add one. So ids made in one process
    sort in creation order, and most calls only format the last two digits.
    """
    global _ulid
    ms = int(time.time() * 1000)
    last_ms, rand, head = _ulid
    if ms > last_ms:
        rand = int.from_bytes(os.urandom(10), "big")
        head = ""
    else:
        rand = (rand + 1) & _RANDOM_MASK
        if rand & 1023 == 0:
            head = ""  # a carry past the last two digits
        ms = last_ms  # the clock stepped back: stay monotonic in the last millisecond
    if not head:
        pairs = _DIGIT_PAIRS
        head = (
            pairs[(ms >> 40) & 1023]
            + pairs[(ms >> 30) & 1023]
            + pairs[(ms >> 20) & 1023]
            + pairs[(ms >> 10) & 1023]
            + pairs[ms & 1023]
            + pairs[rand >> 70]
            + pairs[(rand >> 60) & 1023]
            + pairs[(rand >> 50) & 1023]
            + pairs[(rand >> 40) & 1023]
            + pairs[(rand >> 30) & 1023]
            + pairs[(rand >> 20) & 1023]
            + pairs[(rand >> 10) & 1023]
        )
    _ulid = (ms, rand, head)
    return head + _DIGIT_PAIRS[rand & 1023]


_RANDOM_MASK = (1 << 80) - 1
#: (millisecond, random part, the first 24 characters) of the last id made.
_ulid: tuple[int, int, str] = (-1, 0, "")
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
        env = cls(
            type=message.message_type,
            source=source,
            # model_dump(mode="json") without its wrapper (one call per publish)
            data=message.__pydantic_serializer__.to_python(message, mode="json"),
            **attributes,
        )
        if message.message_version != 1:  # version 1 is the default: sent as nothing
            env.extensions[VERSION_ATTRIBUTE] = message.message_version
        return env

    def to_dict(self) -> dict[str, Any]:
        """The CloudEvents JSON structured-mode object (absent attributes omitted)."""
        out: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        # Spelled out rather than a getattr loop over _ATTRIBUTES: once per publish.
        if self.time is not None:
            out["time"] = self.time
        if self.subject is not None:
            out["subject"] = self.subject
        if self.datacontenttype is not None:
            out["datacontenttype"] = self.datacontenttype
        if self.dataschema is not None:
            out["dataschema"] = self.dataschema
        if self.topic is not None:
            out["topic"] = self.topic
        if self.runid is not None:
            out["runid"] = self.runid
        if self.causationid is not None:
            out["causationid"] = self.causationid
        if self.correlationid is not None:
            out["correlationid"] = self.correlationid
        if self.replyto is not None:
            out["replyto"] = self.replyto
        if self.partitionkey is not None:
            out["partitionkey"] = self.partitionkey
        if self.traceparent is not None:
            out["traceparent"] = self.traceparent
        if self.tracestate is not None:
            out["tracestate"] = self.tracestate
        if self.extensions:
            out.update(self.extensions)
        if self.data is not None:
            out["data"] = self.data
        return out

    def encode(self, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> bytes:
        """Serialise to UTF-8 JSON. Raises :class:`MessageTooLarge` past ``max_bytes``."""
        raw = _json.dumps(self.to_dict())
        if len(raw) > max_bytes:
            raise MessageTooLarge(len(raw), max_bytes, self.type)
        return raw

    @classmethod
    def from_dict(cls, obj: Any) -> Envelope:
        """Validate a decoded JSON object. Raises :class:`DecodeError` with the reason."""
        return cls._from_own_dict(obj.copy() if type(obj) is dict else obj)

    @classmethod
    def _from_own_dict(cls, obj: Any) -> Envelope:
        # Every delivery decodes an envelope: the common shape (only known attributes, all
        # strings or null) is checked with C-level set operations and built in one call;
        # anything else takes the attribute-by-attribute path. ``obj`` is consumed.
        if type(obj) is dict and obj.keys() <= _KNOWN:
            data = obj.pop("data", _ABSENT)
            if (
                set(map(type, obj.values())) <= _STRING_OR_NULL
                and obj.get("specversion") == SPECVERSION
                and obj.get("id")
                and obj.get("source")
                and obj.get("type")
            ):
                del obj["specversion"]
                if "time" not in obj:
                    obj["time"] = None  # absent means absent, not "now"
                if "datacontenttype" not in obj:
                    obj["datacontenttype"] = None
                return cls(data=None if data is _ABSENT else data, **obj)
            if data is not _ABSENT:
                obj["data"] = data
        return cls._from_dict_checked(obj)

    @classmethod
    def _from_dict_checked(cls, obj: Any) -> Envelope:
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
        attrs: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        for name, value in obj.items():
            if name in _STRING_SET:
                if value is not None and not isinstance(value, str):
                    raise DecodeError("invalid CloudEvents attribute", f"{name} must be a string")
                if name in _ATTRIBUTE_SET:
                    attrs[name] = value
            elif name != "data":
                extras[name] = value
        attrs.setdefault("time", None)
        attrs.setdefault("datacontenttype", None)
        return cls(
            type=obj["type"],
            source=obj["source"],
            id=obj["id"],
            data=get("data"),
            extensions=extras,
            **attrs,
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> Envelope:
        """Parse JSON bytes. Raises :class:`DecodeError` for invalid UTF-8, JSON or attributes."""
        try:
            obj = _json.loads(raw)
        except ValueError as exc:
            _strict_parse(raw, exc)  # again with the standard library, for a precise reason
        return cls._from_own_dict(obj)


def _strict_parse(raw: bytes | str, refused: ValueError) -> NoReturn:
    """Say why the fast parser ``refused`` ``raw``: always raises :class:`DecodeError`.

    :mod:`json` words most errors better. What it accepts the fast parser does not stays
    refused all the same: strings with lone surrogates (not Unicode, so such an event
    could not be re-encoded, journaled or signed) and nesting past the fast parser's
    depth limit (which its encoder shares). A number too long to convert is refused by
    both, with a ``ValueError`` that is not a ``JSONDecodeError``.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid UTF-8", str(exc)) from exc
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise DecodeError("invalid JSON", str(exc)) from exc
    surrogate = _lone_surrogate(obj)
    if surrogate is not None:
        raise DecodeError(
            "invalid JSON",
            f"a string holds the lone surrogate {surrogate!r}, which is not Unicode "
            "(\\u escapes must encode characters; surrogates come only in pairs)",
        ) from refused
    detail = str(refused)
    if "recursion limit" in detail:
        detail += f" (JSON may nest at most {_MAX_DEPTH} levels deep)"
    raise DecodeError("invalid JSON", detail) from refused


#: How deep JSON may nest: the fast parser's limit (pydantic-core's encoder has one too).
_MAX_DEPTH = 200


def _lone_surrogate(obj: Any) -> str | None:
    """The first lone surrogate in any string (key or value) of ``obj``, if there is one."""
    stack = [obj]
    while stack:  # not recursive: ``obj`` may nest as deep as json.loads allows
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return value[exc.start : exc.end]
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return None


def decode_data(envelope: Envelope, expected: type[Message] | None = None) -> Message:
    """Turn ``envelope.data`` into its registered message class.

    Raises :class:`DecodeError` for an unknown type or a payload that fails validation.
    """
    cls = expected if expected is not None else lookup_type(envelope.type)
    if cls is None:
        raise DecodeError("unknown message type", repr(envelope.type))
    try:
        return validate_payload(envelope, cls)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise DecodeError("invalid payload", f"{envelope.type}: {errors}") from exc


def validate_payload(envelope: Envelope, cls: type[Message]) -> Message:
    """``envelope.data`` as ``cls``, upcast first when the event is of an older version
    of ``cls``'s type (:mod:`agentbus.schema`). Raises pydantic's ``ValidationError``, or
    :class:`DecodeError` when the versions do not meet."""
    data = envelope.data if envelope.data is not None else {}
    if envelope.extensions or cls.message_version != 1:
        version = version_of(envelope.extensions)
        if version != cls.message_version:
            data = upcast(envelope.type, data, version, cls.message_version)
    return cls.model_validate(data)
