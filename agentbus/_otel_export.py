"""OpenTelemetry metrics instruments and the JSON-lines span exporter.

Part of the OpenTelemetry boundary with :mod:`agentbus.tracing` (which alone imports
this module): split out so each stays a size a reader can hold.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.metrics import Meter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["JsonLinesSpanExporter", "OtelMetrics", "span_record"]


class OtelMetrics:
    """The runtime's counters, histograms and gauges as OpenTelemetry instruments."""

    def __init__(self, meter: Meter, sample_interval: float | None) -> None:
        self.sample_interval = sample_interval
        self._published = meter.create_counter(
            "agentbus.messages.published", "{message}", "Events published"
        )
        self._handled = meter.create_counter(
            "agentbus.messages.handled", "{message}", "Deliveries handled successfully"
        )
        self._failed = meter.create_counter(
            "agentbus.messages.failed", "{message}", "Handler attempts that raised"
        )
        self._dead = meter.create_counter(
            "agentbus.messages.dead_lettered",
            "{message}",
            "Deliveries moved to a dead-letter stream",
        )
        self._duration = meter.create_histogram(
            "agentbus.handler.duration", "s", "Time a handler took, reply included"
        )
        self._latency = meter.create_histogram(
            "agentbus.message.latency", "s", "From the event's publish time to handled"
        )
        self._pending = meter.create_gauge(
            "agentbus.consumer.pending", "{message}", "Delivered but not yet acknowledged"
        )
        self._lag = meter.create_gauge(
            "agentbus.consumer.lag", "{message}", "Not yet delivered to the group"
        )

    def published(self, topic: str) -> None:
        self._published.add(1, {"messaging.destination.name": topic})

    def handled(self, agent: str, topic: str, duration_s: float, latency_s: float | None) -> None:
        attributes = {"messaging.destination.name": topic, "gen_ai.agent.name": agent}
        self._handled.add(1, attributes)
        self._duration.record(duration_s, attributes)
        if latency_s is not None:
            self._latency.record(latency_s, attributes)

    def failed(self, agent: str, topic: str) -> None:
        self._failed.add(1, {"messaging.destination.name": topic, "gen_ai.agent.name": agent})

    def dead_lettered(self, agent: str, topic: str) -> None:
        self._dead.add(1, {"messaging.destination.name": topic, "gen_ai.agent.name": agent})

    def consumer_state(self, topic: str, group: str, pending: int, lag: int | None) -> None:
        attributes = {"messaging.destination.name": topic, "messaging.consumer.group.name": group}
        self._pending.set(pending, attributes)
        if lag is not None:
            self._lag.set(lag, attributes)


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span to ``path`` as one JSON object per line.

    Fields: ``name``, ``kind``, ``trace_id``, ``span_id``, ``parent_span_id`` (hex),
    ``start_ns``, ``end_ns``, ``status``, ``attributes``, ``service``. Handy for tests and
    for tracing without a backend (``AGENTBUS_TRACING=jsonl:spans.jsonl``).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(s), default=str) + "\n" for s in spans)
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as a JSON-ready dict (the :class:`JsonLinesSpanExporter` format)."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
        "span_id": f"{ctx.span_id:016x}" if ctx else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "service": span.resource.attributes.get("service.name"),
    }
