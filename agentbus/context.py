"""What a handler gets besides its message, and the run/causation scope.

The scope (run id, the event being handled) lives in a :mod:`contextvars` variable, so
everything published while handling an event — from the handler, from a task it
started, from a library it called — carries the run id and a ``causationid`` pointing
at that event, with no plumbing by the user.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel

from ._bus import Bus, CallKind
from .envelope import Envelope
from .message import Message
from .redact import install_log_redaction

if TYPE_CHECKING:
    from ._resume import ResumeTape
    from .transports import JournalEntry

__all__ = ["CallKind", "Context", "Scope", "current_scope"]

M = TypeVar("M", bound=Message)
T = TypeVar("T", bound=BaseModel)


@dataclass(slots=True)
class Scope:
    """The run and event an execution belongs to."""

    run_id: str
    causation_id: str | None = None
    agent: str | None = None
    #: The envelope being handled (``None`` in a run's own code).
    event: Envelope | None = None
    #: Counts external calls made while handling the event (to match them on replay).
    calls: int = 0
    #: Counts the requests the handler sent (to find them again on a resume).
    requests: int = 0
    #: Events a de-duplicated handler published, held back to be written atomically
    #: with its ack (``(topic, payload, records)``); ``None`` publishes at once.
    outbox: list[tuple[str, bytes, list[JournalEntry]]] | None = None
    #: The calls a crashed attempt at this delivery recorded, answered instead of made
    #: again (only on a redelivery after a crash; ``None`` otherwise).
    resume: ResumeTape | None = None
    #: Counts questions asked of people while handling the event (``ask_human``): kept
    #: apart from ``calls`` so that call indices of recorded runs do not shift.
    questions: int = 0
    #: Where the delivery being handled came from and its bytes (stream, payload), so
    #: that ``ask_human`` can park it; ``None`` where it cannot park (broadcast).
    parking: tuple[str, bytes] | None = None


_scope: ContextVar[Scope | None] = ContextVar("agentbus_scope", default=None)


def current_scope() -> Scope | None:
    """The scope of the running handler or run, if any."""
    return _scope.get()


def set_scope(scope: Scope | None) -> Any:
    """Enter ``scope``; returns the token for :func:`reset_scope`."""
    return _scope.set(scope)


def reset_scope(token: Any) -> None:
    _scope.reset(token)


class Context:
    """Handed to every handler: publish, request, journal notes, external calls.

    ``event`` is the envelope being handled, ``attempt`` counts deliveries of it;
    ``runtime`` is the :class:`Bus` (the runtime) that delivered it.
    """

    __slots__ = ("agent", "attempt", "event", "runtime")

    def __init__(
        self, runtime: Bus, agent: str, event: Envelope | None = None, attempt: int = 1
    ) -> None:
        self.runtime = runtime
        self.agent = agent
        self.event = event
        self.attempt = attempt

    @property
    def logger(self) -> logging.Logger:
        """The agent's logger, ``agentbus.agent.<name>``."""
        return _logger(self.agent)

    @property
    def run_id(self) -> str | None:
        """The id of the run this event belongs to."""
        scope = current_scope()
        return scope.run_id if scope else None

    async def publish(
        self, topic: str, message: Message, *, key: str | None = None, subject: str | None = None
    ) -> str:
        """Publish ``message`` to ``topic`` as this agent; returns the event id.

        ``key`` sets the partition key. Raises ``MessageTooLarge`` or ``TransportError``.
        """
        return await self.runtime.publish(
            topic, message, key=key, subject=subject, source=self.agent
        )

    @overload
    async def request(
        self,
        topic: str,
        message: Message,
        *,
        timeout: float | None = None,
        expect: type[M],
        key: str | None = None,
    ) -> M: ...

    @overload
    async def request(
        self,
        topic: str,
        message: Message,
        *,
        timeout: float | None = None,
        expect: None = None,
        key: str | None = None,
    ) -> Any: ...

    async def request(
        self,
        topic: str,
        message: Message,
        *,
        timeout: float | None = None,
        expect: type[M] | None = None,
        key: str | None = None,
    ) -> Any:
        """Send a request and wait for its reply (see :meth:`Runtime.request`).

        Returns the reply, typed as ``expect`` when given."""
        return await self.runtime.request(
            topic, message, timeout=timeout, expect=expect, key=key, source=self.agent
        )

    async def note(self, step: str, **details: Any) -> None:
        """Write a ``step`` record into the run's journal (coordinators use this)."""
        await self.runtime.note(step, agent=self.agent, **details)

    async def invoke(
        self,
        kind: CallKind,
        name: str,
        request: dict[str, Any],
        call: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Make an external call (model or tool) through the journaled, replayable seam.

        ``request`` and the returned response must be JSON-ready dicts. The call, its
        response or error, and its duration are journaled; on replay the recorded
        response is returned instead of calling ``call``. Exceptions from ``call``
        propagate after being journaled.
        """
        return await self.runtime.invoke(kind, name, request, call, agent=self.agent)

    async def ask_human(
        self,
        question: BaseModel,
        *,
        expect: type[T],
        timeout: timedelta | float | None = None,
        summary: str | None = None,
    ) -> T:
        """Ask a person ``question`` and return their answer as an ``expect`` instance.

        When there is no answer yet, the handler stops here and its delivery is *parked*:
        acknowledged, held by no process. ``agentbus pending`` lists the question,
        ``agentbus answer RUN QUESTION JSON`` (or :meth:`Runtime.answer`) answers it,
        and a runtime hosting this agent runs the handler again from the start: the model
        and tool calls it made before asking are answered from the journal, and this
        call returns the answer. So code before the question runs twice; it must ask the
        same questions in the same order (else :class:`~agentbus.ResumeMismatch`).

        ``timeout`` (a :class:`~datetime.timedelta` or seconds; ``None``: no deadline):
        when it passes unanswered, the handler is run again and this raises
        :class:`~agentbus.QuestionTimeout` (catch it to decide a default). ``summary``
        is the line ``agentbus pending`` shows (default: the question's JSON). A
        cancelled run's questions are withdrawn. Only in a shared handler (not
        broadcast); raises :class:`~agentbus.UsageError` elsewhere. On replay the
        recorded answer is returned. See docs/durability.md, "Human in the loop".
        """
        return await self.runtime.ask_human(
            question, expect=expect, timeout=timeout, agent=self.agent, summary=summary
        )


@functools.cache
def _logger(agent: str) -> logging.Logger:
    # getLogger takes the logging module's lock; a Context is built for every delivery.
    logger = logging.getLogger(f"agentbus.agent.{agent}")
    install_log_redaction(logger)  # a filter on "agentbus" would not see its records
    return logger
