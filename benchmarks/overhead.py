"""Journal and tracing cost: the ``fanout`` scenario with the journal off/on, tracing off/on.

Tracing on is ``agentbus.tracing.OpenTelemetryTracer`` on an OpenTelemetry SDK tracer
provider with a ``BatchSpanProcessor`` whose exporter drops the spans, plus an SDK meter
provider without readers: what a traced production runtime pays in process, minus the
network export. Baseline: journal off, tracing off (a ratio < 1 is the cost).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from ._harness import Outcome, Row, Settings, interleave, median, ratios, round_size
from .fanout import agentbus_fanout

NAME = "overhead"
TITLE = "Journal and tracing cost (fan-out on Redis)"


def make_tracer() -> tuple[Any, Any] | None:
    """An OpenTelemetry tracer exporting nowhere and its provider, or ``None`` if
    ``agentbus.tracing`` is not written yet."""
    if importlib.util.find_spec("agentbus.tracing") is None:
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from agentbus.tracing import OpenTelemetryTracer

    class DropSpans(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    tracer = OpenTelemetryTracer(
        tracer_provider=provider, meter_provider=MeterProvider(), sample_interval=None
    )
    return tracer, provider


async def run(settings: Settings) -> Outcome:
    n = settings.count(3000, 1000)
    url = settings.redis_url
    size = round_size(n, 200)
    made = make_tracer()
    tracer = None if made is None else made[0]
    variants: list[tuple[str, bool, bool]] = [("off/off", False, False), ("on/off", True, False)]
    if tracer is not None:
        variants += [("off/on", False, True), ("on/on", True, True)]

    def measure(journal: bool, traced: bool) -> Any:
        return lambda r: agentbus_fanout(
            url,
            size(r),
            journal=journal,
            tracer=tracer if traced else None,
            label=f"ovh-{int(journal)}{int(traced)}",
        )

    try:
        results = await interleave(
            settings.rounds, [(name, measure(j, t)) for name, j, t in variants]
        )
    finally:
        if made is not None:
            made[1].shutdown()
    out = Outcome(NAME)
    base = f"journal off, tracing off {median(results['off/off']):,.0f}"
    for name, journal, traced in variants[1:]:
        label = f"journal {'on' if journal else 'off'}, tracing {'on' if traced else 'off'}"
        out.rows.append(
            Row(
                NAME,
                f"{n} msgs, {label} (msg/s)",
                f"{median(results[name]):,.0f}",
                base,
                ratios(results[name], results["off/off"]),
            )
        )
    if tracer is None:
        out.notes.append(
            "overhead: agentbus.tracing does not exist yet, so only the journal was measured."
        )
    out.notes.append(
        f"overhead: {n} messages per round (journal/tracing). Per-round rates (msg/s): "
        + "; ".join(f"{k}: {', '.join(f'{v:,.0f}' for v in vs)}" for k, vs in results.items())
    )
    return out
