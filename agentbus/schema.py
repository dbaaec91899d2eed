"""Schema evolution: message versions and the upcasters that bring old payloads up to date.

A message type keeps its name for life; its shape has a *version* (``version=2`` in the
class statement, 1 by default). Every event carries the version its sender's class had,
as the CloudEvents extension ``dataversion`` (absent for version 1, so that events of
unversioned types stay as they were). Where an event is read — a handler's delivery, a
reply, replay's comparison of recorded and new events, ``agentbus check-compat`` — a
payload older than the reader's class is passed through the upcasters registered for its
type, one version at a time, and only then validated::

    class Refund(Message, type="shop.Refund", version=2):
        order: str
        amount_cents: int  # version 1 had ``amount`` in dollars


    @upcaster("shop.Refund", from_version=1)
    def cents(data: dict) -> dict:
        return {"order": data["order"], "amount_cents": round(data.pop("amount") * 100)}

A payload with no path to the current version (an upcaster missing on the way) or from a
*newer* version than the reader's raises :class:`~agentbus.errors.DecodeError` naming the
type and both versions: the event is dead-lettered, never half-decoded. The rules for
evolving a type are in ``docs/schema-evolution.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .errors import DecodeError, UsageError

__all__ = ["VERSION_ATTRIBUTE", "upcast", "upcaster", "upcasters", "version_of"]

#: The CloudEvents extension attribute carrying a payload's schema version.
VERSION_ATTRIBUTE = "dataversion"

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
F = TypeVar("F", bound=Upcaster)

_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(type_name: str, *, from_version: int) -> Callable[[F], F]:
    """Register ``fn(data) -> data`` turning a ``type_name`` payload of ``from_version``
    into one of ``from_version + 1``. ``data`` is the payload as JSON (a fresh copy the
    function may change). Raises :class:`UsageError` for a second upcaster of the same
    step or a version below 1."""
    if from_version < 1:
        raise UsageError(f"from_version must be at least 1, got {from_version!r}")

    def register(fn: F) -> F:
        key = (type_name, from_version)
        existing = _UPCASTERS.get(key)
        if existing is not None and _qualified(existing) != _qualified(fn):
            raise UsageError(
                f"an upcaster of {type_name!r} from version {from_version} is already "
                f"registered ({_qualified(existing)})"
            )
        _UPCASTERS[key] = fn
        return fn

    return register


def upcasters() -> dict[tuple[str, int], Upcaster]:
    """A copy of the registry: (type name, from version) -> upcaster."""
    return dict(_UPCASTERS)


def version_of(extensions: dict[str, Any]) -> int:
    """The schema version an event's extensions declare (1 when absent). Raises
    :class:`DecodeError` for a value that is not a positive integer."""
    raw = extensions.get(VERSION_ATTRIBUTE)
    if raw is None:
        return 1
    try:
        version = int(raw)
    except (TypeError, ValueError):
        version = 0
    if version < 1 or isinstance(raw, bool):
        raise DecodeError("invalid data version", f"{VERSION_ATTRIBUTE}={raw!r}")
    return version


def upcast(type_name: str, data: Any, version: int, current: int) -> Any:
    """``data`` (a ``type_name`` payload of ``version``) in the shape of ``current``.

    Raises :class:`DecodeError` when the payload is newer than ``current`` or a step on
    the way has no upcaster; whatever an upcaster raises is wrapped in one too."""
    if version == current:
        return data
    if version > current:
        raise DecodeError(
            "newer data version",
            f"{type_name}: the event is version {version}, this code knows up to version "
            f"{current} (upgrade the consumer before the producer)",
        )
    for step in range(version, current):
        fn = _UPCASTERS.get((type_name, step))
        if fn is None:
            raise DecodeError(
                "no upcaster",
                f"{type_name}: the event is version {version}, this code's is version "
                f"{current}, and no upcaster from version {step} is registered "
                f"(@upcaster({type_name!r}, from_version={step}))",
            )
        if not isinstance(data, dict):
            raise DecodeError(
                "invalid payload", f"{type_name} version {step}: expected a JSON object"
            )
        try:
            data = fn(dict(data))
        except Exception as exc:
            raise DecodeError(
                "upcaster failed",
                f"{type_name} from version {step}: {type(exc).__name__}: {exc}",
            ) from exc
    return data


def _qualified(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
