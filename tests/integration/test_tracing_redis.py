"""Tracing across processes on Redis: one run is one trace, linked through the envelopes.

The test process drives the run with an in-memory span exporter; two `agentbus worker`
processes (a planner calling a tool, a writer calling a model) export their spans as
JSON lines. Together the spans must form one tree: workflow → publish → planner →
(tool, step, publish) → writer → chat.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentbus import Runtime
from agentbus.inspect import build_trace, render_tree
from agentbus.testing import wait_for
from agentbus.testing.workers import WorkerProcesses
from agentbus.tracing import OpenTelemetryTracer, span_record

APP_FILE = Path(__file__).with_name("trace_app.py")
_spec = importlib.util.spec_from_file_location("trace_app", APP_FILE)
assert _spec is not None
assert _spec.loader is not None
trace_app = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trace_app)

API_KEY = "sk-tracing-test-5f2c1e9a7b3d"


@pytest.fixture
def workers(redis_url: str, redis_prefix: str) -> Iterator[WorkerProcesses]:
    with WorkerProcesses(f"{redis_url}?prefix={redis_prefix}", f"{APP_FILE}:planner_app") as w:
        yield w


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    complete = path.read_text().split("\n")[:-1]  # a line still being written has no newline
    return [json.loads(line) for line in complete if line.strip()]


def only(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name]
    assert len(found) == 1, f"{name!r} in {[s['name'] for s in spans]}"
    return found[0]


@pytest.mark.redis
@pytest.mark.slow
async def test_a_run_across_two_worker_processes_is_one_linked_trace(
    workers: WorkerProcesses, tmp_path: Path
) -> None:
    planner_file, writer_file = tmp_path / "planner.jsonl", tmp_path / "writer.jsonl"
    workers.start(
        consumer="planner-1",
        extra=("--trace", f"jsonl:{planner_file}"),
        env={"OTEL_SERVICE_NAME": "planner-svc", trace_app.API_KEY_ENV: API_KEY},
    )
    workers.start(  # configured by the environment alone, with content capture on
        app=f"{APP_FILE}:writer_app",
        consumer="writer-1",
        env={
            "AGENTBUS_TRACING": f"jsonl:{writer_file}",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
            trace_app.API_KEY_ENV: API_KEY,
        },
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Runtime(workers.url, tracer=OpenTelemetryTracer(tracer_provider=provider)) as rt:
        async with rt.run("traced") as run:
            answer = await run.request("tracing.jobs", trace_app.Job(topic="streams"), timeout=30)
        assert answer.text == "write about streams: done"
        assert answer.hits == 3

        def exported() -> bool:
            # A handler's span ends after its reply is sent: wait for both handlers' spans.
            names = {s["name"] for s in read_spans(planner_file) + read_spans(writer_file)}
            return {"invoke_agent tracing-planner", "invoke_agent tracing-writer"} <= names

        await wait_for(exported, timeout=20, message="the workers' spans")
        records = await rt.journal.records(run.run_id)
        info = await rt.journal.run(run.run_id)

    driver = [span_record(s) for s in exporter.get_finished_spans()]
    planner, writer = read_spans(planner_file), read_spans(writer_file)
    spans = driver + planner + writer
    trace_ids = {s["trace_id"] for s in spans}
    assert len(trace_ids) == 1, "one run across three processes must be one trace"

    # The causal chain, hop by hop, across the process boundaries.
    workflow = only(driver, "invoke_workflow traced")
    ask = only(driver, "publish tracing.jobs")
    plan = only(planner, "invoke_agent tracing-planner")
    tool = only(planner, "execute_tool lookup")
    step = only(planner, "step tracing.planned")
    delegate = only(planner, "publish tracing.write")
    write = only(writer, "invoke_agent tracing-writer")
    chat = only(writer, "chat fake-model")
    assert workflow["parent_span_id"] is None
    assert ask["parent_span_id"] == workflow["span_id"]
    assert plan["parent_span_id"] == ask["span_id"]
    for child in (tool, step, delegate):
        assert child["parent_span_id"] == plan["span_id"], child["name"]
    assert write["parent_span_id"] == delegate["span_id"]
    assert chat["parent_span_id"] == write["span_id"]
    assert (ask["kind"], plan["kind"], delegate["kind"], write["kind"], chat["kind"]) == (
        "PRODUCER",
        "CONSUMER",
        "PRODUCER",
        "CONSUMER",
        "CLIENT",
    )
    assert {s["service"] for s in planner} == {"planner-svc"}
    assert {s["service"] for s in writer} == {"agentbus-worker"}

    # GenAI conventions, run and event ids on every worker span.
    assert {s["attributes"]["agentbus.run_id"] for s in planner + writer} == {run.run_id}
    assert plan["attributes"]["gen_ai.operation.name"] == "invoke_agent"
    assert plan["attributes"]["gen_ai.agent.name"] == "tracing-planner"
    assert plan["attributes"]["agentbus.event_id"] == ask["attributes"]["agentbus.event_id"]
    assert tool["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert tool["attributes"]["gen_ai.tool.name"] == "lookup"
    assert "gen_ai.tool.call.arguments" not in tool["attributes"]  # planner did not opt in
    chat_attrs = chat["attributes"]
    assert chat_attrs["gen_ai.operation.name"] == "chat"
    assert chat_attrs["gen_ai.provider.name"] == "fake"
    assert chat_attrs["gen_ai.request.model"] == "fake-model"
    assert chat_attrs["gen_ai.response.model"] == "fake-model-001"
    assert (chat_attrs["gen_ai.usage.input_tokens"], chat_attrs["gen_ai.usage.output_tokens"]) == (
        7,
        5,
    )
    assert chat_attrs["gen_ai.agent.name"] == "tracing-writer"
    assert "write about streams" in chat_attrs["gen_ai.input.messages"]  # writer opted in

    # The API key the model call used is nowhere: not in spans, not in the span files.
    assert API_KEY not in json.dumps(spans)
    assert API_KEY not in planner_file.read_text() + writer_file.read_text()

    # From the journal to the tracing backend: `agentbus trace` prints the trace id.
    (trace_id,) = trace_ids
    assert f"trace id {trace_id}" in render_tree(build_trace(info, records))


@pytest.mark.slow
def test_agentbus_run_with_trace_flag_exports_the_run(tmp_path: Path) -> None:
    spans_file = tmp_path / "run.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTBUS_", "OTEL_"))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentbus",
            "run",
            f"{APP_FILE}:app",
            "--url",
            "memory://?journal=",
            "--trace",
            f"jsonl:{spans_file}",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    spans = read_spans(spans_file)
    names = {s["name"] for s in spans}
    assert {
        "invoke_workflow tracing",
        "invoke_agent tracing-planner",
        "invoke_agent tracing-writer",
        "execute_tool lookup",
        "chat fake-model",
    } <= names
    assert len({s["trace_id"] for s in spans}) == 1
    assert {s["service"] for s in spans} == {"agentbus-run"}
    assert only(spans, "invoke_workflow tracing")["attributes"]["agentbus.run_id"] == run_id
