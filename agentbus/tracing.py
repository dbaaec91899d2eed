"""OpenTelemetry tracing and metrics for agentbus (with :mod:`agentbus._otel_export`, the
only modules importing OpenTelemetry).

Turn it on with ``Runtime(tracer=configure_tracing("console" | "otlp" | "jsonl:PATH"))``,
with ``agentbus worker|run --trace ...``, or with ``AGENTBUS_TRACING``; it is off by default
and then costs next to nothing (``import agentbus`` does not even import OpenTelemetry).

What is traced, in one trace per run across every process on the same Redis:

- ``invoke_workflow {run}`` — a run (``async with rt.run(...)``), the trace's root;
- ``publish {topic}`` (PRODUCER) — each publish; its context travels in the event's
  ``traceparent``/``tracestate`` (the CloudEvents distributed-tracing extension);
- ``invoke_agent {agent}`` (CONSUMER) — each handler attempt, a child of the publish;
- ``chat {model}`` / ``execute_tool {tool}`` — each live model/tool call via ``ctx.invoke``;
- ``step {name}`` — each coordinator step (``ctx.note``).

Spans follow the OpenTelemetry GenAI and messaging semantic conventions and carry the
event id and run id (``agentbus.event_id``, ``agentbus.run_id``) so a journal entry and a
span find each other. Message content (prompts, completions, tool arguments and results)
is recorded only when ``capture_content`` is on
(``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._hooks import CallSpan, MetricsSink
from ._otel_export import JsonLinesSpanExporter, OtelMetrics, span_record
from .context import current_scope
from .envelope import Envelope
from .errors import UsageError
from .redact import MASK, is_secret_key, redact, redact_text

__all__ = [
    "JsonLinesSpanExporter",
    "OpenTelemetryTracer",
    "configure_tracing",
    "span_record",
]

SCOPE_NAME = "agentbus"
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_W3C = TraceContextTextMapPropagator()
_ROOT = OtelContext()  # an empty context: "no parent", whatever the caller's context holds
_DETAIL_CHARS = 256


class OpenTelemetryTracer:
    """Spans and metrics for a :class:`~agentbus.Runtime`, through OpenTelemetry.

    Uses the given providers, else the global ones (so spans join an application that
    configured OpenTelemetry itself). ``capture_content`` records prompts, completions
    and tool arguments/results as span attributes (off by default: they may hold
    personal data). Pending/lag gauges are sampled every ``sample_interval`` seconds
    (``None`` turns sampling off); ``metrics=False`` disables metrics altogether.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        capture_content: bool = False,
        metrics: bool = True,
        sample_interval: float | None = 15.0,
    ) -> None:
        from . import __version__

        provider = tracer_provider or trace.get_tracer_provider()
        self._tracer = provider.get_tracer(SCOPE_NAME, __version__)
        self.capture_content = capture_content
        self.metrics: MetricsSink | None = None
        if metrics:
            meters = meter_provider or otel_metrics.get_meter_provider()
            self.metrics = OtelMetrics(meters.get_meter(SCOPE_NAME, __version__), sample_interval)
        #: Providers built by :func:`configure_tracing`, flushed and shut down by us.
        self.owned: list[SdkTracerProvider | SdkMeterProvider] = []

    # -- the Tracer protocol ----------------------------------------------------------------
    @contextmanager
    def workflow(self, name: str, run_id: str) -> Iterator[Span]:
        attributes = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": name,
            "agentbus.run_id": run_id,
        }
        with (
            self._tracer.start_as_current_span(
                f"invoke_workflow {name}",
                kind=SpanKind.INTERNAL,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span,
            _masked_errors(span),
        ):
            yield span

    @contextmanager
    def produce(self, env: Envelope, topic: str) -> Iterator[Span]:
        parent: OtelContext | None = None
        if not trace.get_current_span().get_span_context().is_valid:
            # Outside any span (e.g. an error reply after the handler's span ended):
            # hang the publish under the event being handled, not in a trace of its own.
            scope = current_scope()
            if scope is not None and scope.event is not None:
                parent = _extract(scope.event)
        attributes = _messaging(env, topic, "send")
        span = self._tracer.start_span(
            f"publish {topic}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        )
        ctx = span.get_span_context()
        if ctx.is_valid:
            env.traceparent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
            env.tracestate = ctx.trace_state.to_header() or None
        with (
            trace.use_span(
                span, end_on_exit=True, record_exception=False, set_status_on_exception=False
            ),
            _masked_errors(span),
        ):
            yield span

    @contextmanager
    def consume(self, env: Envelope, agent: str, topic: str) -> Iterator[Span]:
        attributes = _messaging(env, topic, "process")
        attributes["gen_ai.operation.name"] = "invoke_agent"
        attributes["gen_ai.agent.name"] = agent
        with (
            self._tracer.start_as_current_span(
                f"invoke_agent {agent}",
                context=_extract(env),
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span,
            _masked_errors(span),
        ):
            yield span

    @contextmanager
    def call(
        self, kind: str, name: str, agent: str | None, request: Mapping[str, Any]
    ) -> Iterator[CallSpan]:
        attributes = _ids()
        if agent:
            attributes["gen_ai.agent.name"] = agent
        if kind == "model":
            model = str(request.get("model") or name)
            span_name, span_kind = f"chat {model}", SpanKind.CLIENT
            attributes["gen_ai.operation.name"] = "chat"
            attributes["gen_ai.request.model"] = model
            for key in ("temperature", "max_tokens"):
                if isinstance(request.get(key), int | float):
                    attributes[f"gen_ai.request.{key}"] = request[key]
            if self.capture_content:
                attributes["gen_ai.input.messages"] = _json(request.get("messages", []))
        else:
            span_name, span_kind = f"execute_tool {name}", SpanKind.INTERNAL
            attributes["gen_ai.operation.name"] = "execute_tool"
            attributes["gen_ai.tool.name"] = name
            attributes["gen_ai.tool.type"] = "function"
            if self.capture_content:
                attributes["gen_ai.tool.call.arguments"] = _json(request)
        with (
            self._tracer.start_as_current_span(
                span_name,
                kind=span_kind,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span,
            _masked_errors(span),
        ):
            try:
                yield _CallSpan(span, kind, self.capture_content)
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                raise

    def step(self, name: str, agent: str | None, details: Mapping[str, Any]) -> None:
        attributes = _ids()
        attributes["agentbus.step"] = name
        if agent:
            attributes["gen_ai.agent.name"] = agent
        for key, value in details.items():
            if isinstance(value, bool | int | float):
                attributes[f"agentbus.step.{key}"] = value
            elif value is not None:
                text = value if isinstance(value, str) else _json(redact(value))
                text = MASK if is_secret_key(key) else redact_text(text)
                attributes[f"agentbus.step.{key}"] = text[:_DETAIL_CHARS]
        self._tracer.start_span(f"step {name}", attributes=attributes).end()

    # -- lifecycle -------------------------------------------------------------------------------
    def force_flush(self, timeout_ms: int = 10_000) -> None:
        """Export what the providers built by :func:`configure_tracing` still buffer."""
        for provider in self.owned:
            provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Flush and shut down the providers built by :func:`configure_tracing`."""
        for provider in self.owned:
            provider.shutdown()
        self.owned.clear()


class _CallSpan:
    """Adds the response's model, provider, usage (and content, if captured) to a span."""

    __slots__ = ("capture", "kind", "span")

    def __init__(self, span: Span, kind: str, capture: bool) -> None:
        self.span, self.kind, self.capture = span, kind, capture

    def response(self, response: Mapping[str, Any]) -> None:
        span = self.span
        if self.kind != "model":
            if self.capture:
                span.set_attribute("gen_ai.tool.call.result", _json(redact(response)))
            return
        for key, attribute in (
            ("model", "gen_ai.response.model"),
            ("provider", "gen_ai.provider.name"),
        ):
            if isinstance(response.get(key), str):
                span.set_attribute(attribute, response[key])
        usage = response.get("usage")
        if isinstance(usage, Mapping):
            for key in ("input_tokens", "output_tokens"):
                if isinstance(usage.get(key), int):
                    span.set_attribute(f"gen_ai.usage.{key}", usage[key])
        if isinstance(response.get("finish_reason"), str):
            span.set_attribute("gen_ai.response.finish_reasons", [response["finish_reason"]])
        if self.capture and "message" in response:
            span.set_attribute("gen_ai.output.messages", _json([redact(response["message"])]))


def configure_tracing(
    exporter: str | None = None,
    *,
    service_name: str = "agentbus",
    instance_id: str | None = None,
    capture_content: bool | None = None,
    set_global: bool = False,
) -> OpenTelemetryTracer | None:
    """Build OpenTelemetry providers exporting to ``exporter`` and a tracer using them.

    ``exporter`` is ``"console"`` (spans and metrics to stderr), ``"otlp"`` (needs
    ``pip install 'agentbus-streams[otlp]'``; configured by the standard ``OTEL_EXPORTER_OTLP_*``
    variables), ``"jsonl:PATH"`` (spans as JSON lines, no metrics) or ``"off"``; ``None``
    reads ``$AGENTBUS_TRACING``. Returns ``None`` when tracing is off (or
    ``OTEL_SDK_DISABLED=true``), which :class:`~agentbus.Runtime` takes as "no tracer".
    ``OTEL_SERVICE_NAME`` overrides ``service_name``; ``OTEL_METRICS_EXPORTER=none`` turns
    metrics off; ``capture_content=None`` reads ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
    ``set_global`` also installs the providers globally, so spans users create in their
    handlers join the same traces. Call ``shutdown()`` on the result before exiting.

    Raises :class:`UsageError` for an unknown exporter, or ``"otlp"`` without the exporter
    package installed.
    """
    spec = (os.environ.get("AGENTBUS_TRACING", "") if exporter is None else exporter).strip()
    if spec.lower() in ("", "off", "none") or _truthy(os.environ.get("OTEL_SDK_DISABLED")):
        return None
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    metric_exporter: MetricExporter | None = None
    span_processor: SpanProcessor
    if kind == "console":
        span_processor = BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
        metric_exporter = ConsoleMetricExporter(out=sys.stderr)
    elif kind == "otlp":
        span_exporter, metric_exporter = _otlp_exporters()
        span_processor = BatchSpanProcessor(span_exporter)
    elif kind == "jsonl" and arg:
        # Written synchronously so that the file is complete the moment a span ends.
        span_processor = SimpleSpanProcessor(JsonLinesSpanExporter(arg))
    else:
        raise UsageError(
            f"unknown tracing exporter {spec!r}; use 'console', 'otlp', 'jsonl:PATH' or 'off'"
        )
    if os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "none":
        metric_exporter = None
    resource = _resource(service_name, instance_id)
    tracer_provider = SdkTracerProvider(resource=resource)
    tracer_provider.add_span_processor(span_processor)
    readers = [PeriodicExportingMetricReader(metric_exporter)] if metric_exporter else []
    meter_provider = SdkMeterProvider(resource=resource, metric_readers=readers)
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        otel_metrics.set_meter_provider(meter_provider)
    if capture_content is None:
        capture_content = _truthy(os.environ.get(CAPTURE_ENV))
    tracer = OpenTelemetryTracer(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        capture_content=capture_content,
        metrics=metric_exporter is not None,
    )
    tracer.owned += [tracer_provider, meter_provider]
    return tracer


# -- helpers ------------------------------------------------------------------------------------
@contextmanager
def _masked_errors(span: Span) -> Iterator[None]:
    """Record an exception on ``span`` as the SDK would, with secrets masked.

    The SDK's own recording is turned off where spans start: it stores ``str(exc)``
    verbatim, and exception texts can carry credentials (URLs, Authorization headers).
    """
    try:
        yield
    except BaseException as exc:
        if span.is_recording():
            message = redact_text(str(exc))
            span.add_event(
                "exception",
                {
                    "exception.type": type(exc).__qualname__,
                    "exception.message": message,
                    "exception.stacktrace": redact_text("".join(traceback.format_exception(exc))),
                },
            )
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))
        raise


def _otlp_exporters() -> tuple[SpanExporter, MetricExporter]:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    ).strip()
    package = "opentelemetry.exporter.otlp.proto." + (
        "http" if protocol.startswith("http") else "grpc"
    )
    try:
        traces = importlib.import_module(package + ".trace_exporter")
        metrics = importlib.import_module(package + ".metric_exporter")
    except ImportError as exc:
        raise UsageError(
            f"tracing to OTLP ({protocol}) needs the exporter package: "
            f"pip install 'agentbus-streams[otlp]' ({exc})"
        ) from exc
    span_exporter: SpanExporter = traces.OTLPSpanExporter()
    metric_exporter: MetricExporter = metrics.OTLPMetricExporter()
    return span_exporter, metric_exporter


def _resource(service_name: str, instance_id: str | None) -> Resource:
    resource = Resource.create()  # reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    ours: dict[str, str] = {}
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        ours["service.name"] = service_name
    if instance_id and "service.instance.id" not in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        ours["service.instance.id"] = instance_id
    return resource.merge(Resource(ours)) if ours else resource


def _extract(env: Envelope) -> OtelContext:
    if not env.traceparent:
        return _ROOT
    carrier = {"traceparent": env.traceparent}
    if env.tracestate:
        carrier["tracestate"] = env.tracestate
    return _W3C.extract(carrier, context=_ROOT)


def _messaging(env: Envelope, topic: str, operation: str) -> dict[str, Any]:
    # Kept short on purpose: every attribute costs on the hot path.
    attributes: dict[str, Any] = {
        "messaging.system": "agentbus",
        "messaging.operation.type": operation,
        "messaging.destination.name": topic,
        "messaging.message.id": env.id,
        "cloudevents.event_type": env.type,
        "agentbus.event_id": env.id,
    }
    if env.runid:
        attributes["agentbus.run_id"] = env.runid
    if env.causationid:
        attributes["agentbus.causation_id"] = env.causationid
    if env.correlationid:
        attributes["messaging.message.conversation_id"] = env.correlationid
    return attributes


def _ids() -> dict[str, Any]:
    """The run and the event being handled, for spans that are not about one event."""
    scope = current_scope()
    if scope is None:
        return {}
    attributes: dict[str, Any] = {"agentbus.run_id": scope.run_id}
    if scope.causation_id:
        attributes["agentbus.event_id"] = scope.causation_id
    return attributes


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
