"""Exceptions raised by agentbus.

Every exception the runtime raises on purpose derives from :class:`AgentBusError`.
Errors from dependencies (redis-py, openai, httpx) are translated into these at the
boundary that uses the dependency and chained with ``from exc``::

    AgentBusError
    ├── UsageError                 you configured or called something wrongly (raised early)
    ├── MessageError               an event could not be built or read
    │   ├── MessageTooLarge        the encoded envelope is over the size limit
    │   ├── DecodeError            bad JSON, missing attributes, unknown type, invalid payload
    │   └── SignatureError         a signed envelope failed verification
    ├── TransportError             talking to the message store failed
    │   ├── TransportClosed        you closed it (or the runtime was stopped)
    │   ├── TransportUnavailable   the world broke it: unreachable, refused, auth, TLS
    │   └── GroupNotFound          a consumer group vanished (e.g. Redis restarted empty)
    ├── RequestTimeout             no reply in time (also a ``TimeoutError``)
    ├── RemoteError                the handler of a request failed; carries its type and message
    ├── ResumeMismatch             a resumed handler asked for a call other than the recorded one
    ├── RunCancelled               the run was cancelled (agentbus cancel, run.cancel())
    ├── BudgetExceeded             a call would pass one of the run's budget limits (not retried)
    └── HandlerError               base for errors a handler raises to steer delivery
        └── Reject                 do not retry this event: dead-letter it at once

Messages say what was wrong, what is allowed and the offending value.
"""

from __future__ import annotations

__all__ = [
    "AgentBusError",
    "BudgetExceeded",
    "DecodeError",
    "GroupNotFound",
    "HandlerError",
    "InvalidAnswer",
    "MessageError",
    "MessageTooLarge",
    "QuestionClosed",
    "QuestionTimeout",
    "Reject",
    "RemoteError",
    "RequestTimeout",
    "ResumeMismatch",
    "RunCancelled",
    "SignatureError",
    "TransportClosed",
    "TransportError",
    "TransportUnavailable",
    "UnknownQuestion",
    "UsageError",
]


class AgentBusError(Exception):
    """Root of every exception agentbus raises on purpose."""


class UsageError(AgentBusError):
    """A developer's mistake: wrong configuration, wrong arguments, wrong handler signature."""


class MessageError(AgentBusError):
    """An event could not be built, encoded or decoded."""


class MessageTooLarge(MessageError):
    """The encoded envelope exceeds the configured size limit."""

    def __init__(self, size: int, limit: int, type_: str) -> None:
        super().__init__(
            f"event of type {type_!r} is {size} bytes encoded; the limit is {limit} bytes "
            "(raise Runtime(max_event_bytes=...) or send a reference to the data instead)"
        )
        self.size = size
        self.limit = limit


class DecodeError(MessageError):
    """An incoming entry is not a valid agentbus event. ``reason`` is a short, stable cause."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SignatureError(DecodeError):
    """A signed envelope is unsigned, signed with an unknown key, or tampered with."""


class TransportError(AgentBusError):
    """Talking to the message store failed."""


class TransportClosed(TransportError):
    """The transport or runtime was closed by its owner; no further operations are possible."""


class TransportUnavailable(TransportError, ConnectionError):
    """The message store cannot be reached or refused us (network, auth, TLS, restart)."""


class GroupNotFound(TransportError):
    """A consumer group does not exist (never created, or lost with the data)."""


class RequestTimeout(AgentBusError, TimeoutError):
    """A request got no reply within its timeout."""

    def __init__(
        self, topic: str, timeout: float, correlation_id: str, reason: str | None = None
    ) -> None:
        super().__init__(
            f"no reply to the request on topic {topic!r} within {timeout:g}s "
            f"(correlation id {correlation_id!r}); "
            f"{reason or 'is an agent subscribed to that topic?'}"
        )
        self.topic = topic
        self.timeout = timeout
        self.correlation_id = correlation_id
        #: Where the request stood when the requester gave up, when it could be told.
        self.reason = reason


class RemoteError(AgentBusError):
    """The remote handler of a request failed; ``error_type`` and ``message`` say how."""

    def __init__(
        self, error_type: str, message: str, *, agent: str = "", event_id: str = ""
    ) -> None:
        where = f" in agent {agent!r}" if agent else ""
        super().__init__(f"{error_type}{where}: {message}")
        self.error_type = error_type
        self.message = message
        self.agent = agent
        self.event_id = event_id


class ResumeMismatch(AgentBusError):
    """A handler resumed after a crash asked for a call other than the one its crashed
    attempt recorded at the same index (not deterministic between the two): the attempt
    fails with this error rather than get another call's answer."""


class RunCancelled(AgentBusError):
    """The run was cancelled (``agentbus cancel``, ``run.cancel()``): no more work in it."""


class BudgetExceeded(AgentBusError):
    """A model or tool call would pass one of its run's budget limits (``limit``:
    ``tokens``, ``cost``, ``model_calls``, ``tool_calls`` or ``deadline``), so it was not
    made. Final: the delivery is dead-lettered without retrying (a retry would only be
    refused again) and a requester gets this error as the reply."""

    def __init__(
        self,
        message: str,
        *,
        limit: str = "",
        spent: float = 0.0,
        attempted: float = 0.0,
        allowed: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.spent = spent
        self.attempted = attempted
        self.allowed = allowed


class QuestionTimeout(AgentBusError, TimeoutError):
    """Raised by :meth:`~agentbus.Context.ask_human` when nobody answered the question
    before its ``timeout``. Catch it in the handler to decide a default; uncaught, it
    fails the attempt like any error. ``question_id`` and ``deadline`` (Unix time) say
    which question and when it expired."""

    def __init__(self, message: str, *, question_id: str = "", deadline: float | None = None):
        super().__init__(message)
        self.question_id = question_id
        self.deadline = deadline


class UnknownQuestion(AgentBusError):
    """No question with that id in that run (``agentbus answer``, ``Runtime.answer``)."""


class QuestionClosed(AgentBusError):
    """The question can no longer be answered: it was answered already, it timed out,
    or it was withdrawn (its run was cancelled). ``status`` says which."""

    def __init__(self, message: str, *, status: str = "") -> None:
        super().__init__(message)
        self.status = status


class InvalidAnswer(AgentBusError):
    """An answer that does not fit the type the handler expects (``expect=``): refused
    when it is given, so the resumed handler never sees it."""


class HandlerTimeout(AgentBusError, TimeoutError):
    """A handler attempt ran past its ``timeout``: it was cancelled and counts as failed."""


class HandlerError(AgentBusError):
    """Base for exceptions a handler raises to steer how its event is delivered."""


class Reject(HandlerError):
    """Raised by a handler: the event can never succeed, dead-letter it without retrying."""
