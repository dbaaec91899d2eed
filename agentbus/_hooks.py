"""Observation hooks the runtime calls: a tracer interface and in-process metrics.

The default tracer does nothing at near-zero cost; the OpenTelemetry one lives in
:mod:`agentbus.tracing` so that nothing else imports OpenTelemetry.

Where the runtime calls them:

- ``workflow`` around a :class:`~agentbus.Run` (``async with rt.run(...)``);
- ``produce`` around encoding and storing an event (it may set ``env.traceparent``);
- ``consume`` around each handler attempt of a delivery;
- ``call`` around each live model/tool call made through ``ctx.invoke``;
- ``step`` when a coordinator writes a journal note (``ctx.note``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .envelope import Envelope
    from .transports import Transport

__all__ = ["CallSpan", "Metrics", "MetricsSink", "NullTracer", "Tracer"]

log = logging.getLogger("agentbus.metrics")


class CallSpan(Protocol):
    """What ``Tracer.call`` yields: told about the response once it arrives."""

    def response(self, response: Mapping[str, Any]) -> None: ...


class MetricsSink(Protocol):
    """Receives what :class:`Metrics` counts (the OpenTelemetry tracer provides one)."""

    #: Seconds between samples of pending/lag per topic and group; ``None`` never samples.
    sample_interval: float | None

    def published(self, topic: str) -> None: ...

    def handled(
        self, agent: str, topic: str, duration_s: float, latency_s: float | None
    ) -> None: ...

    def failed(self, agent: str, topic: str) -> None: ...

    def dead_lettered(self, agent: str, topic: str) -> None: ...

    def consumer_state(self, topic: str, group: str, pending: int, lag: int | None) -> None: ...


class Tracer(Protocol):
    """Spans around runs, publishes, handled deliveries, external calls and steps.

    ``metrics`` is an optional sink for the runtime's counters and gauges.
    """

    metrics: MetricsSink | None

    def workflow(self, name: str, run_id: str) -> AbstractContextManager[Any]: ...

    def produce(self, env: Envelope, topic: str) -> AbstractContextManager[Any]: ...

    def consume(self, env: Envelope, agent: str, topic: str) -> AbstractContextManager[Any]: ...

    def call(
        self, kind: str, name: str, agent: str | None, request: Mapping[str, Any]
    ) -> AbstractContextManager[CallSpan]: ...

    def step(self, name: str, agent: str | None, details: Mapping[str, Any]) -> None: ...


class _NullCall:
    def response(self, response: Mapping[str, Any]) -> None:
        pass


class NullTracer:
    """Records nothing (the default): every hook is a shared no-op."""

    metrics: MetricsSink | None = None
    _null: AbstractContextManager[None] = nullcontext()
    _null_call: AbstractContextManager[CallSpan] = nullcontext(_NullCall())

    def workflow(self, name: str, run_id: str) -> AbstractContextManager[Any]:
        return self._null

    def produce(self, env: Envelope, topic: str) -> AbstractContextManager[Any]:
        return self._null

    def consume(self, env: Envelope, agent: str, topic: str) -> AbstractContextManager[Any]:
        return self._null

    def call(
        self, kind: str, name: str, agent: str | None, request: Mapping[str, Any]
    ) -> AbstractContextManager[CallSpan]:
        return self._null_call

    def step(self, name: str, agent: str | None, details: Mapping[str, Any]) -> None:
        pass


class Metrics:
    """Counters of what this runtime did, forwarded to an optional :class:`MetricsSink`.

    ``counts`` always holds ``published``, ``handled``, ``failed`` (handler attempts
    that raised) and ``dead_lettered``; the sink additionally gets durations,
    end-to-end latencies and, every ``sample_interval`` seconds, the pending count and
    lag of each topic and group this runtime reads.
    """

    def __init__(self, sink: MetricsSink | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.sink = sink
        self._sampler: asyncio.Task[None] | None = None

    def published(self, topic: str) -> None:
        self.counts["published"] += 1
        if self.sink is not None:
            self.sink.published(topic)

    def handled(self, agent: str, topic: str, duration_ms: float, sent: str | None = None) -> None:
        """One delivery handled; ``sent`` is the event's ``time`` (for the latency)."""
        self.counts["handled"] += 1
        if self.sink is not None:
            self.sink.handled(agent, topic, duration_ms / 1000, _age(sent))

    def failed(self, agent: str, topic: str) -> None:
        self.counts["failed"] += 1
        if self.sink is not None:
            self.sink.failed(agent, topic)

    def dead_lettered(self, agent: str, topic: str) -> None:
        self.counts["dead_lettered"] += 1
        if self.sink is not None:
            self.sink.dead_lettered(agent, topic)

    # -- pending and lag ------------------------------------------------------------------
    def start(self, transport: Transport, groups: Callable[[], list[tuple[str, str]]]) -> None:
        """Sample pending/lag of the ``groups()`` (topic, group) pairs read here, every
        ``sample_interval`` seconds of the sink (when it wants them)."""
        interval = self.sink.sample_interval if self.sink is not None else None
        if interval is None or self._sampler is not None:
            return
        self._sampler = asyncio.create_task(
            self._sample_forever(transport, groups, interval), name="agentbus-metrics"
        )

    async def aclose(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            try:
                await self._sampler
            except asyncio.CancelledError:
                pass
            self._sampler = None

    async def sample(self, transport: Transport, groups: list[tuple[str, str]]) -> None:
        """Report pending and lag of each (topic, group) in ``groups``, once."""
        ours = set(groups)
        if self.sink is None or not ours:
            return
        for info in await transport.admin.topics():
            for group in info.groups:
                if (info.topic, group.name) in ours:
                    self.sink.consumer_state(info.topic, group.name, group.pending, group.lag)

    async def _sample_forever(
        self,
        transport: Transport,
        groups: Callable[[], list[tuple[str, str]]],
        interval: float,
    ) -> None:
        while True:
            try:
                await self.sample(transport, groups())
            except Exception as exc:  # a metrics hiccup must never stop the runtime
                log.debug("sampling pending/lag failed: %s", exc)
            await asyncio.sleep(interval)


def _age(sent: str | None) -> float | None:
    """Seconds since the RFC 3339 time ``sent`` (``None`` when absent or unreadable)."""
    if not sent:
        return None
    try:
        then = datetime.fromisoformat(sent)
    except ValueError:
        return None
    if then.tzinfo is None:
        return None
    return max(0.0, (datetime.now(then.tzinfo) - then).total_seconds())
