"""Typed messages and the registry that maps a stable type name to its class.

A message is a pydantic model with a type name that stays the same when the class is
renamed or moved, so events recorded today still decode tomorrow::

    class Question(Message, type="research.Question"):
        text: str

Without ``type=`` the name is ``<module>.<ClassName>``. ``version=`` is the version of
the type's shape (1 by default), sent with every event; older payloads are brought up to
it by upcasters (:mod:`agentbus.schema`).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from .errors import UsageError

__all__ = ["Message", "lookup_type", "registered_types"]

_REGISTRY: dict[str, type[Message]] = {}


class Message(BaseModel):
    """Base class of every event payload. Subclass it with ``type="domain.Name"``."""

    model_config = ConfigDict(extra="forbid")

    message_type: ClassVar[str] = "agentbus.Message"
    #: The version of this type's shape (``version=`` in the class statement).
    message_version: ClassVar[int] = 1

    def __init_subclass__(
        cls, type: str | None = None, version: int | None = None, **kwargs: Any
    ) -> None:
        # pydantic forwards class keywords both here and to __pydantic_init_subclass__;
        # we consume ours in the latter, once the model is fully built.
        super().__init_subclass__(**kwargs)

    @classmethod
    def __pydantic_init_subclass__(
        cls, type: str | None = None, version: int | None = None, **kwargs: Any
    ) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        name = type or f"{cls.__module__}.{cls.__qualname__}"
        if version is not None and (not isinstance(version, int) or version < 1):
            raise UsageError(f"a message version is a positive integer, got {version!r}")
        if not name or any(c.isspace() for c in name):
            raise UsageError(f"message type names must be non-empty without spaces, got {name!r}")
        existing = _REGISTRY.get(name)
        # The same class loaded twice (a script imported under two module names) is fine;
        # two different classes claiming one type name is a mistake.
        same = existing is not None and (
            _qualified(existing) == _qualified(cls)
            or (
                existing.__qualname__ == cls.__qualname__
                and existing.model_json_schema() == cls.model_json_schema()
            )
        )
        if existing is not None and not same:
            raise UsageError(
                f"message type {name!r} is already registered by {_qualified(existing)}; "
                f"give {_qualified(cls)} another type name"
            )
        cls.message_type = name
        cls.message_version = version or 1
        _REGISTRY[name] = cls


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def lookup_type(name: str) -> type[Message] | None:
    """Return the message class registered under ``name``, or ``None``."""
    return _REGISTRY.get(name)


def registered_types() -> dict[str, type[Message]]:
    """A copy of the registry: type name -> message class."""
    return dict(_REGISTRY)


_T = TypeVar("_T")


def topic_first(topic: Any, what: _T, call: str) -> tuple[str, _T]:
    """``(topic, what)`` of a call that takes the topic first.

    The 0.1 order (``publish(message, topic)``) is swapped back with a
    ``DeprecationWarning``; anything else that is not a topic raises :class:`UsageError`.
    """
    if isinstance(topic, str):
        return topic, what
    if isinstance(what, str):
        warnings.warn(
            f"{call}(message, topic) is deprecated: the topic comes first, "
            f"{call}({what!r}, message)",
            DeprecationWarning,
            stacklevel=3,
        )
        return what, topic
    raise UsageError(f"{call}() takes the topic first, then the message; got {topic!r}")
