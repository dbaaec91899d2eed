"""agentbus: multi-agent AI systems on Redis Streams, with a replayable event log.

Define agents as Python classes with typed handlers, host them in a :class:`Runtime`,
and every event they exchange is recorded in the run's :class:`Journal`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._bus import Bus
from ._hooks import CallSpan, MetricsSink, Tracer
from ._settings import Settings
from .agent import Agent, HandlerSpec, Mode, handle
from .app import App, load_app
from .budget import Budget
from .clock import Clock, FakeClock, SystemClock
from .context import CallKind, Context, Scope, current_scope
from .envelope import DEFAULT_MAX_EVENT_BYTES, Envelope, decode_data, new_id
from .errors import (
    AgentBusError,
    BudgetExceeded,
    DecodeError,
    GroupNotFound,
    HandlerError,
    HandlerTimeout,
    InvalidAnswer,
    MessageError,
    MessageTooLarge,
    QuestionClosed,
    QuestionTimeout,
    Reject,
    RemoteError,
    RequestTimeout,
    ResumeMismatch,
    RunCancelled,
    SignatureError,
    TransportClosed,
    TransportError,
    TransportUnavailable,
    UnknownQuestion,
    UsageError,
)
from .journal import Journal
from .keys import Keys
from .message import Message, lookup_type, registered_types
from .partitions import partition_of, partition_stream
from .retention import MaintenanceReport, Retention
from .runs import Run
from .runtime import Runtime
from .schema import upcaster
from .signing import Signer
from .transports import (
    DeadConsumer,
    DeadLetter,
    JournalRecord,
    MemoryTransport,
    Question,
    RunInfo,
    TopicInfo,
    Transport,
    open_archive,
    open_transport,
)
from .transports.archive_format import RunSummary
from .transports.run_query import RunFilter

if TYPE_CHECKING:
    from .tracing import OpenTelemetryTracer, configure_tracing

__version__ = "0.1.0"

#: Imported on first use, so that ``import agentbus`` never imports OpenTelemetry.
_LAZY = {"OpenTelemetryTracer": "tracing", "configure_tracing": "tracing"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentbus' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "Agent",
    "AgentBusError",
    "App",
    "Budget",
    "BudgetExceeded",
    "Bus",
    "CallKind",
    "CallSpan",
    "Clock",
    "Context",
    "DeadConsumer",
    "DeadLetter",
    "DecodeError",
    "Envelope",
    "FakeClock",
    "GroupNotFound",
    "HandlerError",
    "HandlerSpec",
    "HandlerTimeout",
    "InvalidAnswer",
    "Journal",
    "JournalRecord",
    "Keys",
    "MaintenanceReport",
    "MemoryTransport",
    "Message",
    "MessageError",
    "MessageTooLarge",
    "MetricsSink",
    "Mode",
    "OpenTelemetryTracer",
    "Question",
    "QuestionClosed",
    "QuestionTimeout",
    "Reject",
    "RemoteError",
    "RequestTimeout",
    "ResumeMismatch",
    "Retention",
    "Run",
    "RunCancelled",
    "RunFilter",
    "RunInfo",
    "RunSummary",
    "Runtime",
    "Scope",
    "Settings",
    "SignatureError",
    "Signer",
    "SystemClock",
    "TopicInfo",
    "Tracer",
    "Transport",
    "TransportClosed",
    "TransportError",
    "TransportUnavailable",
    "UnknownQuestion",
    "UsageError",
    "configure_tracing",
    "current_scope",
    "decode_data",
    "handle",
    "load_app",
    "lookup_type",
    "new_id",
    "open_archive",
    "open_transport",
    "partition_of",
    "partition_stream",
    "registered_types",
    "upcaster",
]
