"""OpenTelemetry tracing and metrics: spans, their links, GenAI attributes, metrics, export."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agentbus import Agent, Context, Message, Reject, RemoteError, Runtime, UsageError, handle
from agentbus.inspect import build_trace, render_tree
from agentbus.testing import wait_for
from agentbus.tracing import OpenTelemetryTracer, configure_tracing


class Question(Message, type="unit.tracing.Question"):
    text: str
    fail_times: int = 0


class Answer(Message, type="unit.tracing.Answer"):
    text: str


FAKE_RESPONSE = {
    "message": {"role": "assistant", "content": "forty-two"},
    "usage": {"input_tokens": 11, "output_tokens": 4},
    "model": "fake-model-2024",
    "provider": "fake",
    "finish_reason": "stop",
}


class Sage(Agent, name="sage"):
    """Takes a step, calls a tool and a model, and answers; fails the first attempts on demand."""

    def __init__(self) -> None:
        self.attempts = 0

    @handle("unit.tracing.ask")
    async def answer(self, q: Question, ctx: Context) -> Answer:
        self.attempts += 1
        if self.attempts <= q.fail_times:
            raise RuntimeError(f"flaky attempt {self.attempts}")
        if q.text == "reject":
            raise Reject("not answering that")
        await ctx.note("sage.thinking", round=1, strategy="direct", notes="x" * 1000)

        async def lookup() -> dict[str, Any]:
            return {"hits": ["the answer"]}

        async def chat() -> dict[str, Any]:
            return FAKE_RESPONSE

        await ctx.invoke("tool", "lookup", {"query": q.text}, lookup)
        request = {"messages": [{"role": "user", "content": q.text}], "temperature": 0.2}
        response = await ctx.invoke("model", "fake-model", request, chat)
        return Answer(text=response["message"]["content"])


class Spans:
    """A tracer whose spans land in memory, plus a metric reader."""

    def __init__(self, *, capture_content: bool = False, sample_interval: float | None = None):
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.tracer = OpenTelemetryTracer(
            tracer_provider=provider,
            meter_provider=MeterProvider(metric_readers=[self.reader]),
            capture_content=capture_content,
            sample_interval=sample_interval,
        )

    @property
    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.finished if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"{name!r}: {[s.name for s in self.finished]}"
        return found[0]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        out.extend(m.data.data_points)
        return out


@pytest.fixture
def spans() -> Spans:
    return Spans()


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_run_is_one_trace_linking_producer_consumer_and_calls(
    url_for: str, spans: Spans
) -> None:
    async with Runtime(url_for, tracer=spans.tracer) as rt:
        rt.add(Sage())
        async with rt.run("ask-sage") as run:
            answer = await run.request("unit.tracing.ask", Question(text="meaning?"), timeout=10)
        await rt.idle()
        assert answer == Answer(text="forty-two")
        records = await rt.journal.records(run.run_id)
        info = await rt.journal.run(run.run_id)

    workflow = spans.one("invoke_workflow ask-sage")
    publish = spans.one("publish unit.tracing.ask")
    consume = spans.one("invoke_agent sage")
    tool = spans.one("execute_tool lookup")
    chat = spans.one("chat fake-model")
    step = spans.one("step sage.thinking")
    reply = next(s for s in spans.finished if s.name.startswith("publish _inbox."))
    assert len({s.context.trace_id for s in spans.finished}) == 1  # one run, one trace
    assert workflow.parent is None
    assert parent_of(publish) == workflow.context.span_id
    assert parent_of(consume) == publish.context.span_id
    for child in (tool, chat, step, reply):
        assert parent_of(child) == consume.context.span_id, child.name
    assert consume.parent is not None
    assert consume.parent.is_remote  # came via the envelope
    kinds = {s.name: s.kind for s in (workflow, publish, consume, tool, chat, reply)}
    assert kinds == {
        workflow.name: SpanKind.INTERNAL,
        publish.name: SpanKind.PRODUCER,
        consume.name: SpanKind.CONSUMER,
        tool.name: SpanKind.INTERNAL,
        chat.name: SpanKind.CLIENT,
        reply.name: SpanKind.PRODUCER,
    }
    # Every span names the run; event spans name their event.
    event_id = attrs(publish)["agentbus.event_id"]
    assert {attrs(s)["agentbus.run_id"] for s in spans.finished} == {run.run_id}
    for s in (publish, consume, tool, chat, step):
        assert attrs(s)["agentbus.event_id"] == event_id, s.name
    assert attrs(reply)["agentbus.causation_id"] == event_id
    # The journal's envelopes carry their publish span, and the trace view shows the trace id.
    published = {
        r.record["event"]["id"]: r.record["event"] for r in records if r.kind == "published"
    }
    trace_id = f"{publish.context.trace_id:032x}"
    flags = publish.context.trace_flags
    assert published[event_id]["traceparent"] == (
        f"00-{trace_id}-{publish.context.span_id:016x}-{flags:02x}"
    )
    assert flags.sampled
    assert f"trace id {trace_id}" in render_tree(build_trace(info, records))


async def test_genai_attributes_without_content_by_default(spans: Spans) -> None:
    async with Runtime("memory://?journal=", tracer=spans.tracer) as rt:
        rt.add(Sage())
        async with rt.run("genai") as run:
            await run.request("unit.tracing.ask", Question(text="secret question"), timeout=10)
        await rt.idle()

    assert attrs(spans.one("invoke_workflow genai")) == {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": "genai",
        "agentbus.run_id": run.run_id,
    }
    consume = attrs(spans.one("invoke_agent sage"))
    assert consume["gen_ai.operation.name"] == "invoke_agent"
    assert consume["gen_ai.agent.name"] == "sage"
    assert consume["messaging.destination.name"] == "unit.tracing.ask"
    assert consume["messaging.operation.type"] == "process"
    assert consume["cloudevents.event_type"] == "unit.tracing.Question"
    chat = attrs(spans.one("chat fake-model"))
    assert {k: v for k, v in chat.items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.agent.name": "sage",
        "gen_ai.request.model": "fake-model",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.response.model": "fake-model-2024",
        "gen_ai.provider.name": "fake",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 4,
        "gen_ai.response.finish_reasons": ("stop",),
    }
    tool = attrs(spans.one("execute_tool lookup"))
    assert tool["gen_ai.operation.name"] == "execute_tool"
    assert tool["gen_ai.tool.name"] == "lookup"
    step = attrs(spans.one("step sage.thinking"))
    assert step["agentbus.step"] == "sage.thinking"
    assert step["agentbus.step.round"] == 1
    assert step["agentbus.step.strategy"] == "direct"
    assert len(step["agentbus.step.notes"]) == 256  # details are clipped
    everything = json.dumps([attrs(s) for s in spans.finished])
    assert "secret question" not in everything
    assert "forty-two" not in everything


async def test_message_content_is_recorded_only_when_opted_in() -> None:
    spans = Spans(capture_content=True)
    async with Runtime("memory://?journal=", tracer=spans.tracer) as rt:
        rt.add(Sage())
        async with rt.run("content") as run:
            await run.request("unit.tracing.ask", Question(text="secret question"), timeout=10)
        await rt.idle()

    chat = attrs(spans.one("chat fake-model"))
    assert json.loads(chat["gen_ai.input.messages"]) == [
        {"role": "user", "content": "secret question"}
    ]
    assert json.loads(chat["gen_ai.output.messages"]) == [FAKE_RESPONSE["message"]]
    tool = attrs(spans.one("execute_tool lookup"))
    assert json.loads(tool["gen_ai.tool.call.arguments"]) == {"query": "secret question"}
    assert json.loads(tool["gen_ai.tool.call.result"]) == {"hits": ["the answer"]}


async def test_failed_attempts_and_calls_are_error_spans_in_the_same_trace(spans: Spans) -> None:
    async with Runtime(
        "memory://?journal=", tracer=spans.tracer, max_attempts=3, retry_backoff=(0.001, 0.002)
    ) as rt:
        rt.add(Sage())
        async with rt.run("flaky"):

            async def broken() -> dict[str, Any]:
                raise ConnectionError("tool is down")

            with pytest.raises(ConnectionError):
                await rt.invoke("tool", "broken", {}, broken)
            answer = await rt.request("unit.tracing.ask", Question(text="q", fail_times=2))
        await rt.idle()

    assert answer == Answer(text="forty-two")
    attempts = spans.named("invoke_agent sage")
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert "flaky attempt 1" in (attempts[0].status.description or "")
    assert len({parent_of(s) for s in attempts}) == 1  # every attempt: child of the publish
    broken_span = spans.one("execute_tool broken")
    assert broken_span.status.status_code is StatusCode.ERROR
    assert attrs(broken_span)["error.type"] == "ConnectionError"
    assert len({s.context.trace_id for s in spans.finished}) == 1


async def test_a_failed_run_is_an_error_span(spans: Spans) -> None:
    async with Runtime("memory://?journal=", tracer=spans.tracer) as rt:
        with pytest.raises(ValueError, match="boom"):
            async with rt.run("doomed"):
                raise ValueError("boom")

    workflow = spans.one("invoke_workflow doomed")
    assert workflow.status.status_code is StatusCode.ERROR
    assert [e.name for e in workflow.events] == ["exception"]


async def test_an_error_reply_stays_in_the_requests_trace(spans: Spans) -> None:
    async with Runtime("memory://?journal=", tracer=spans.tracer) as rt:
        rt.add(Sage())
        async with rt.run("rejected") as run:
            with pytest.raises(RemoteError):
                await run.request("unit.tracing.ask", Question(text="reject"), timeout=10)
        await rt.idle()

    consume = spans.one("invoke_agent sage")
    error_reply = next(s for s in spans.finished if s.name.startswith("publish _inbox."))
    assert consume.status.status_code is StatusCode.ERROR
    # Published after the handler's span ended: hung under the request's publish instead.
    assert parent_of(error_reply) == parent_of(consume)
    assert len({s.context.trace_id for s in spans.finished}) == 1


async def test_events_published_without_tracing_start_a_trace_where_consumed(
    spans: Spans,
) -> None:
    async with Runtime("memory://?journal=") as plain:
        untraced = Runtime(transport=plain.transport, tracer=spans.tracer)
        untraced.add(Sage())
        await untraced.start()
        try:
            async with plain.run("mixed") as run:
                await run.request("unit.tracing.ask", Question(text="q"), timeout=10)
            await untraced.idle()
        finally:
            await untraced.aclose()
        events = await plain.journal.events(run.run_id)

    assert events[0].traceparent is None  # tracing off: the envelope carries nothing
    consume = spans.one("invoke_agent sage")
    assert consume.parent is None  # a new trace, rooted at the consumer
    assert parent_of(spans.one("chat fake-model")) == consume.context.span_id


async def test_metrics_count_time_and_sample_pending_and_lag() -> None:
    spans = Spans(sample_interval=0.02)
    release = asyncio.Event()

    class Slow(Agent, name="slow"):
        @handle("unit.tracing.slow")
        async def on(self, q: Question, ctx: Context) -> None:
            await release.wait()

    async with Runtime(
        "memory://?journal=", tracer=spans.tracer, max_attempts=1, concurrency=1
    ) as rt:
        rt.add(Sage(), Slow())
        async with rt.run("metrics") as run:
            await run.request("unit.tracing.ask", Question(text="q"), timeout=10)
            await run.publish("unit.tracing.ask", Question(text="reject"))
            for n in range(3):
                await run.publish("unit.tracing.slow", Question(text=f"slow {n}"))

        def slow_state(metric: str) -> int | None:
            for p in spans.points(metric):
                if p.attributes.get("messaging.destination.name") == "unit.tracing.slow":
                    return int(p.value)
            return None

        await wait_for(
            lambda: (
                slow_state("agentbus.consumer.pending") == 1
                and slow_state("agentbus.consumer.lag") == 2
            ),
            message="sampled pending=1, lag=2 for the stuck group",
        )
        release.set()
        await rt.idle()
        await wait_for(
            lambda: (
                slow_state("agentbus.consumer.pending") == 0
                and slow_state("agentbus.consumer.lag") == 0
            ),
            message="sampled pending=0, lag=0 once released",
        )
        counts = dict(rt.metrics.counts)

    def total(metric: str) -> int:
        return sum(int(p.value) for p in spans.points(metric))

    assert counts == {"published": 6, "handled": 4, "failed": 1, "dead_lettered": 1}
    assert total("agentbus.messages.published") == 6  # 2 asks, 3 slow, 1 reply
    assert total("agentbus.messages.handled") == 4
    assert total("agentbus.messages.failed") == 1
    assert total("agentbus.messages.dead_lettered") == 1
    durations = spans.points("agentbus.handler.duration")
    assert sum(p.count for p in durations) == 4
    latencies = spans.points("agentbus.message.latency")
    assert sum(p.count for p in latencies) == 4
    assert all(p.min >= 0 for p in latencies)
    sample = next(p for p in spans.points("agentbus.consumer.pending"))
    assert set(sample.attributes) == {"messaging.destination.name", "messaging.consumer.group.name"}


def test_tracing_is_off_by_default_and_never_imports_opentelemetry(tmp_path: Path) -> None:
    script = """
import asyncio, sys
from agentbus import Agent, Context, Message, Runtime, handle

class Ping(Message, type="unit.tracing.Ping"):
    n: int

class Echo(Agent, name="echo"):
    @handle("ping")
    async def on(self, msg: Ping, ctx: Context) -> Ping:
        await ctx.note("echo")
        return msg

async def main() -> None:
    async with Runtime("memory://?journal=") as rt:
        rt.add(Echo())
        async with rt.run("off") as run:
            await run.request("ping", Ping(n=1))
            events = await rt.journal.events(run.run_id)
    assert all(e.traceparent is None for e in events), events
    loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
    assert not loaded, loaded

asyncio.run(main())
import agentbus
assert agentbus.configure_tracing("off") is None  # imported on first use
assert "opentelemetry.sdk.trace" in sys.modules
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_configure_tracing_off_unknown_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTBUS_TRACING", raising=False)
    assert configure_tracing() is None
    assert configure_tracing("off") is None
    monkeypatch.setenv("AGENTBUS_TRACING", "off")
    assert configure_tracing() is None
    with pytest.raises(UsageError, match="'zipkin'"):
        configure_tracing("zipkin")
    with pytest.raises(UsageError, match="jsonl:PATH"):
        configure_tracing("jsonl:")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert configure_tracing("console") is None


async def test_jsonl_exporter_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spans.jsonl"
    monkeypatch.setenv("AGENTBUS_TRACING", f"jsonl:{path}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "unit-svc")
    tracer = configure_tracing()
    assert tracer is not None
    try:
        async with Runtime("memory://?journal=", tracer=tracer) as rt:
            rt.add(Sage())
            async with rt.run("jsonl") as run:
                await run.request("unit.tracing.ask", Question(text="q"), timeout=10)
            await rt.idle()
    finally:
        tracer.shutdown()
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    by_name = {s["name"]: s for s in spans}
    assert {"invoke_workflow jsonl", "invoke_agent sage", "chat fake-model"} <= set(by_name)
    assert {s["trace_id"] for s in spans} == {by_name["invoke_workflow jsonl"]["trace_id"]}
    assert {s["service"] for s in spans} == {"unit-svc"}
    chat = by_name["chat fake-model"]
    assert chat["parent_span_id"] == by_name["invoke_agent sage"]["span_id"]
    assert chat["attributes"]["gen_ai.usage.output_tokens"] == 4
    assert chat["attributes"]["agentbus.run_id"] == run.run_id


async def test_console_exporter_writes_spans_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    tracer = configure_tracing("console", service_name="console-svc")
    assert tracer is not None
    try:
        async with Runtime("memory://?journal=", tracer=tracer) as rt:
            rt.add(Sage())
            async with rt.run("console") as run:
                await run.request("unit.tracing.ask", Question(text="q"), timeout=10)
            await rt.idle()
    finally:
        tracer.shutdown()
    out = capsys.readouterr()
    assert "invoke_agent sage" in out.err
    assert run.run_id in out.err
    assert "console-svc" in out.err
    assert "agentbus.messages.handled" in out.err  # metrics are flushed at shutdown too
    assert out.out == ""


def test_otlp_without_the_exporter_package_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    # Hide the exporter package whether or not it is installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(UsageError, match=r"agentbus-streams\[otlp\]"):
        configure_tracing("otlp")


async def test_otlp_over_http_reaches_a_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    # Installed by the dev extra: a missing exporter fails this test rather than skipping it.
    import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401

    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        tracer = configure_tracing("otlp", service_name="otlp-svc")
        assert tracer is not None
        try:
            async with Runtime("memory://?journal=", tracer=tracer) as rt:
                rt.add(Sage())
                async with rt.run("otlp") as run:
                    await run.request("unit.tracing.ask", Question(text="q"), timeout=10)
                await rt.idle()
        finally:
            await asyncio.to_thread(tracer.shutdown)  # flushes: blocking HTTP posts
    finally:
        server.shutdown()
        server.server_close()
    traces = b"".join(body for path, body in received if path == "/v1/traces")
    metrics = b"".join(body for path, body in received if path == "/v1/metrics")
    assert b"invoke_agent sage" in traces
    assert run.run_id.encode() in traces
    assert b"otlp-svc" in traces
    assert b"agentbus.messages.handled" in metrics


async def test_secrets_never_reach_spans_even_with_content_capture() -> None:
    secret = "sk-live-0123456789abcdef"
    spans = Spans(capture_content=True)

    class Leaky(Agent, name="leaky"):
        @handle("unit.tracing.leaky")
        async def on(self, q: Question, ctx: Context) -> None:
            await ctx.note("leaky.config", api_key=secret, url=f"redis://u:{secret}@host/0")

            async def config() -> dict[str, Any]:
                return {"endpoint": "https://api.example", "api_key": secret}

            async def broken() -> dict[str, Any]:
                raise ConnectionError(f"401 for Authorization: Bearer {secret}")

            request = {"path": "/v1", "headers": {"Authorization": f"Bearer {secret}"}}
            await ctx.invoke("tool", "config", request, config)
            with pytest.raises(ConnectionError):
                await ctx.invoke("model", "m", {"messages": [], "api_key": secret}, broken)
            raise RuntimeError(f"giving up on https://user:{secret}@api.example/v1")

    async with Runtime("memory://?journal=", tracer=spans.tracer, max_attempts=1) as rt:
        rt.add(Leaky())
        async with rt.run("leaky") as run:
            await run.publish("unit.tracing.leaky", Question(text="q"))
        await wait_for(lambda: rt.metrics.counts["dead_lettered"] == 1, message="dead letter")
        await rt.idle()

    recorded = [
        (attrs(s), s.status.description, [(e.name, dict(e.attributes or {})) for e in s.events])
        for s in spans.finished
    ]
    assert {"execute_tool config", "chat m", "step leaky.config"} <= {
        s.name for s in spans.finished
    }
    assert spans.one("invoke_agent leaky").status.status_code is StatusCode.ERROR
    assert "gen_ai.tool.call.result" in attrs(spans.one("execute_tool config"))  # captured...
    assert secret not in json.dumps(recorded, default=str)  # ...but never the secret
