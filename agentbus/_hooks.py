"""Observation hooks the runtime calls: a tracer interface and in-process metrics.

The default tracer does nothing at near-zero cost; the OpenTelemetry one lives in
:mod:`agentbus.tracing` so that nothing else imports OpenTelemetry.
"""

from __future__ import annotations

from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .envelope import Envelope


class Tracer(Protocol):
    """Spans around publishes, handled deliveries and external calls."""

    def produce(self, env: Envelope, topic: str) -> AbstractContextManager[Any]: ...

    def consume(self, env: Envelope, agent: str, topic: str) -> AbstractContextManager[Any]: ...

    def call(self, kind: str, name: str, agent: str | None) -> AbstractContextManager[Any]: ...


class NullTracer:
    """Records nothing."""

    _null: AbstractContextManager[None] = nullcontext()

    def produce(self, env: Envelope, topic: str) -> AbstractContextManager[Any]:
        return self._null

    def consume(self, env: Envelope, agent: str, topic: str) -> AbstractContextManager[Any]:
        return self._null

    def call(self, kind: str, name: str, agent: str | None) -> AbstractContextManager[Any]:
        return self._null


class Metrics:
    """Counters of what this runtime did (published, handled, dead-lettered)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.handler_ms_total = 0.0

    def published(self, topic: str) -> None:
        self.counts["published"] += 1

    def handled(self, agent: str, topic: str, duration_ms: float) -> None:
        self.counts["handled"] += 1
        self.handler_ms_total += duration_ms

    def dead_lettered(self, agent: str, topic: str) -> None:
        self.counts["dead_lettered"] += 1
