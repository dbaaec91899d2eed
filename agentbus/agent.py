"""Agents: Python classes whose typed handlers are bound to topics.

::

    class Researcher(Agent, name="researcher"):
        @handle("research.questions")
        async def answer(self, q: Question, ctx: Context) -> Answer:
            return Answer(text=...)

The handler's first parameter's annotation picks the message type(s) it accepts (a
union accepts several). Returning a message replies to the sender of a request, or
publishes to the handler's ``output`` topic.

Subscription modes: ``shared`` (default) puts all instances of an agent name in one
consumer group, so replicas compete for events; ``broadcast`` gives every instance
its own group, so each sees every event. A handler that answers or acts belongs in a
shared one (the logical agent answers once, however many processes host it); broadcast
is for keeping per-process state, such as a fold of a log — what a broadcast handler
publishes is published once per process.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, Union

from .errors import UsageError
from .keys import validate_topic
from .message import Message

if TYPE_CHECKING:
    from .context import Context

__all__ = ["Agent", "HandlerSpec", "Mode", "handle"]

Mode = Literal["shared", "broadcast"]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

_SPEC_ATTR = "__agentbus_handler__"
_BINDINGS_ATTR = "_agentbus_bindings"


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """How one handler method is bound (see :func:`handle`)."""

    topic: str
    method: str
    mode: Mode
    message_types: tuple[type[Message], ...] | None
    output: str | None
    dedupe: bool
    max_attempts: int | None
    from_start: bool | None
    #: Seconds one attempt may take (``None``: the runtime's ``handler_timeout``).
    timeout: float | None = None


def handle(
    topic: str,
    message: type[Message] | tuple[type[Message], ...] | None = None,
    *,
    mode: Mode = "shared",
    output: str | None = None,
    dedupe: bool = False,
    max_attempts: int | None = None,
    from_start: bool | None = None,
    timeout: float | None = None,
) -> Callable[[F], F]:
    """Bind an ``async def handler(self, message, ctx)`` method to ``topic``.

    ``message`` overrides the type taken from the annotation. ``output`` is where a
    returned message goes when the event was not a request. ``dedupe`` skips events
    this agent already handled (by event id). ``max_attempts`` overrides the runtime's.
    ``from_start`` makes a new shared group start at the topic's first entry (default
    for shared) rather than at new entries only (default for broadcast). ``timeout``
    bounds one attempt in seconds (default: the runtime's ``handler_timeout``): a
    handler still running then is cancelled and the attempt counts as failed
    (:class:`HandlerTimeout`), retried or dead-lettered like any failure.

    Raises :class:`UsageError` for a bad topic, mode, timeout or non-async function.
    """
    template = _template(topic, message, mode, output, dedupe, max_attempts, from_start, timeout)

    def decorate(fn: F) -> F:
        specs: list[HandlerSpec] = list(getattr(fn, _SPEC_ATTR, ()))
        specs.append(_for(template, fn))
        setattr(fn, _SPEC_ATTR, tuple(specs))
        return fn

    return decorate


def _check_options(
    topic: str, mode: str, output: str | None, max_attempts: int | None, timeout: float | None
) -> None:
    """The checks :func:`handle` and :meth:`Agent.bind` share; raises :class:`UsageError`."""
    validate_topic(topic)
    if mode not in ("shared", "broadcast"):
        raise UsageError(f"mode must be 'shared' or 'broadcast', got {mode!r}")
    if output is not None:
        validate_topic(output)
    if max_attempts is not None and max_attempts < 1:
        raise UsageError(f"max_attempts must be at least 1, got {max_attempts!r}")
    if timeout is not None and not timeout > 0:
        raise UsageError(f"timeout must be a positive number of seconds, got {timeout!r}")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Agent:
    """Base class of agents. Subclass with ``name="..."`` to set the agent's name.

    The name identifies the agent across processes: shared subscriptions use it as
    the consumer group, so replicas with one name share the work. ``Agent(name=...)``
    overrides it per instance. ``concurrency`` bounds how many of this agent's
    events of one topic are handled at once in one runtime (default: the runtime's);
    each topic has its own slots, so handlers stuck on one cannot starve the others.

    A handler whose topic is known only per instance is bound in ``__init__`` with
    :meth:`bind`, which takes the options of :func:`handle`::

        class Desk(Agent, name="desk"):
            def __init__(self, *, topic: str) -> None:
                super().__init__()
                self.bind(topic, self.on_question, max_attempts=2)

            async def on_question(self, q: Question, ctx: Context) -> Answer: ...
    """

    agent_name: ClassVar[str] = ""
    concurrency: ClassVar[int | None] = None

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.agent_name = name or _snake(cls.__name__)

    def __init__(self, *, name: str | None = None) -> None:
        if name is not None:
            self._name = name

    @property
    def name(self) -> str:
        """This instance's agent name."""
        return self.__dict__.get("_name") or type(self).agent_name or _snake(type(self).__name__)

    async def on_start(self, ctx: Context) -> None:
        """Called once when the runtime starts hosting this agent."""

    async def on_stop(self) -> None:
        """Called once when the runtime stops hosting this agent."""

    def handlers(self) -> list[tuple[HandlerSpec, tuple[type[Message], ...]]]:
        """This agent's handlers with their resolved message types.

        Raises :class:`UsageError` when a handler's message type cannot be resolved.
        """
        out = []
        seen: set[str] = set()
        for klass in type(self).__mro__:
            for attr, fn in vars(klass).items():
                if attr in seen:
                    continue
                specs = getattr(fn, _SPEC_ATTR, None)
                if specs is None:
                    continue
                seen.add(attr)
                for spec in specs:
                    out.append((spec, spec.message_types or _message_types(fn)))
        out.extend(self.__dict__.get(_BINDINGS_ATTR, ()))
        return out

    def bind(
        self,
        topic: str,
        method: Callable[..., Awaitable[Any]],
        *,
        message: type[Message] | tuple[type[Message], ...] | None = None,
        mode: Mode = "shared",
        output: str | None = None,
        dedupe: bool = False,
        max_attempts: int | None = None,
        from_start: bool | None = None,
        timeout: float | None = None,
    ) -> HandlerSpec:
        """Bind ``method`` (a handler of this instance) to ``topic``, chosen at run time.

        The instance form of :func:`handle`, with the same options: call it in
        ``__init__`` when the topic depends on the instance (a board's name, a
        configured job topic), e.g. ``self.bind(self.topic, self.on_job)``.
        :meth:`handlers` returns these bindings after the ``@handle`` ones, so subclasses
        need not override it. ``message`` overrides the type taken from the method's
        annotation. Returns the :class:`HandlerSpec`.

        Raises :class:`UsageError` for a bad topic, mode, output, ``max_attempts`` or
        ``timeout``, for a method that is not an ``async def`` method of this agent, or
        when the message type cannot be resolved.
        """
        template = _template(
            topic, message, mode, output, dedupe, max_attempts, from_start, timeout
        )
        fn = getattr(method, "__func__", None)
        if getattr(method, "__self__", None) is not self or fn is None:
            raise UsageError(
                f"bind() takes a method of this agent ({self.name!r}), such as "
                f"self.on_job, got {method!r}"
            )
        spec = _for(template, fn)
        types_ = spec.message_types or _message_types(fn)
        self.__dict__.setdefault(_BINDINGS_ATTR, []).append((spec, types_))
        return spec

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


def _template(
    topic: str,
    message: type[Message] | tuple[type[Message], ...] | None,
    mode: Mode,
    output: str | None,
    dedupe: bool,
    max_attempts: int | None,
    from_start: bool | None,
    timeout: float | None,
) -> HandlerSpec:
    """The checked options of :func:`handle` and :meth:`Agent.bind`, for any method."""
    _check_options(topic, mode, output, max_attempts, timeout)
    explicit = (message,) if isinstance(message, type) else message
    return HandlerSpec(topic, "", mode, explicit, output, dedupe, max_attempts, from_start, timeout)


def _for(template: HandlerSpec, fn: Callable[..., Any]) -> HandlerSpec:
    """``template`` bound to the handler function ``fn`` (which must be ``async def``)."""
    if not inspect.iscoroutinefunction(fn):
        raise UsageError(f"handler {fn.__qualname__} must be an 'async def' function")
    return dataclasses.replace(template, method=fn.__name__)


def _message_types(fn: Callable[..., Any]) -> tuple[type[Message], ...]:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 3:
        raise UsageError(
            f"handler {fn.__qualname__} must take (self, message, ctx), got {len(params)} parameters"
        )
    try:
        hints = typing.get_type_hints(fn)
    except NameError as exc:
        raise UsageError(
            f"cannot resolve the message type of handler {fn.__qualname__}: {exc}; "
            "define the message class at module level or pass it: @handle(topic, MessageClass)"
        ) from exc
    hint = hints.get(params[1].name)
    candidates = (
        typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    )
    found = tuple(c for c in candidates if isinstance(c, type) and issubclass(c, Message))
    if not found or len(found) != len(candidates):
        raise UsageError(
            f"handler {fn.__qualname__}: annotate its message parameter with Message "
            f"subclasses (or a union of them), got {hint!r}"
        )
    return found
