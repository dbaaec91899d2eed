"""Secrets never leave: every output agentbus writes is grepped for secrets planted in it.

Secrets in every shape reach agentbus: a Redis password holding '/', '@' and ':' (real ACL
user), ``ssl_password=`` in the URL (real TLS server), ``?password=``/``?api_key=`` and a
``Bearer`` credential in a handler's exception text, ``?api_key=`` in a tool's URL argument,
``?token=`` in its result, an ``sk-`` key in log lines and step details, a URL with a password
in run metadata. Outputs grepped: journal records, dead letters, error replies
(``RemoteError``), log records, spans (in-memory exporter, and ``--trace jsonl:`` files), and
the CLI as real subprocesses — the worker's banner and output, ``run``, ``runs --json``,
``trace`` (tree, ``--json --show-payloads``, ``--html``), ``export``, ``dlq``, a failing
invalid URL.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from agentbus import Runtime
from agentbus.testing.redis_server import RedisServer, TlsFiles, make_test_certificates

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("secrets_app", HERE / "secrets_app.py")
assert _spec is not None
assert _spec.loader is not None
secrets_app = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(secrets_app)
SECRETS, Failer, Fetcher, drive = (
    secrets_app.SECRETS, secrets_app.Failer, secrets_app.Fetcher, secrets_app.drive,
)  # fmt: skip
REPO = HERE.parents[1]
APP = str(HERE / "secrets_app.py")
USER_PASSWORD = "Zq1a/Zq1b@Zq1c:Zq1d"  # '/', '@' and ':' in a real Redis password
SSL_PASSWORD = "Zq2sslpw"  # ssl_password= in the URL
RAW_PASSWORD = "Zq9a/Zq9b"  # unencoded in an invalid URL: redis-py quotes a piece of it
ALL = (*SECRETS, USER_PASSWORD, quote(USER_PASSWORD, safe=""), SSL_PASSWORD)
PIECES = ("Zq1a", "Zq1b", "Zq1c", "Zq1d", "Zq9a", "Zq9b")


def assert_clean(label: str, text: str) -> None:
    leaked = [s for s in (*ALL, *PIECES) if s in text]
    assert not leaked, f"{label} shows {leaked}: {text[:2000]}"


def _spans() -> tuple[object, object]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentbus.tracing import OpenTelemetryTracer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, OpenTelemetryTracer(
        tracer_provider=provider, capture_content=True, metrics=False
    )


async def test_in_process_outputs_hold_no_secret(
    url_for: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    exporter, tracer = _spans()
    meta_url = f"redis://app:{quote(SECRETS[-1])}@db.internal:6379/0?ssl_password={SSL_PASSWORD}"
    async with Runtime(url_for, tracer=tracer, max_attempts=1) as rt:  # type: ignore[arg-type]
        rt.add(Fetcher(), Failer())
        async with rt.run("secrets", meta={"url": meta_url, "password": SSL_PASSWORD}) as run:
            got = await drive(run)
        await rt.idle()
        records = [r.record for r in await rt.journal.records(run.run_id)]
        letters = [d.to_dict() for d in await rt.transport.admin.dead_letters("secrets.fail")]
        info = (await rt.journal.run(run.run_id)).to_dict()
    # The planted secrets did reach agentbus, masked where the shapes were:
    assert "password=***" in got["error"]
    assert "Bearer ***" in got["error"]
    kinds = {r["kind"] for r in records}
    assert {"tool_call", "failed", "step", "run_started", "run_finished"} <= kinds
    [call] = [r for r in records if r["kind"] == "tool_call"]
    assert "api_key=***" in call["request"]["url"]
    assert call["response"]["next"] == "https://files.example.test/f?token=***&page=2"
    assert len(letters) == 1
    assert "fetched https://files.example.test/f?token=***&page=2" in caplog.text
    formatted = "\n".join(
        logging.Formatter("%(message)s").format(r) for r in caplog.records
    )  # exceptions included
    spans = "\n".join(s.to_json() for s in exporter.get_finished_spans())  # type: ignore[attr-defined]
    assert "execute_tool fetch" in spans
    assert "invoke_agent secrets-failer" in spans
    for label, text in [
        ("RemoteError", json.dumps(got)),
        ("journal", json.dumps(records)),
        ("dead letters", json.dumps(letters)),
        ("run info", json.dumps(info)),
        ("logs", caplog.text + formatted),
        ("spans", spans),
    ]:
        assert_clean(label, text)


def test_the_redaction_is_installed_on_every_agentbus_logger() -> None:
    import re

    from agentbus.redact import RedactingFilter

    names = set()
    for path in (REPO / "agentbus").rglob("*.py"):
        names.update(re.findall(r'getLogger\("([^"]+)"\)', path.read_text()))
    assert names, "no loggers found"
    for name in sorted(names):
        filters = logging.getLogger(name).filters
        assert any(isinstance(f, RedactingFilter) for f in filters), name


# -- the CLI, in real subprocesses, against Redis with a password and TLS -------------------------
@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_test_certificates(tmp_path_factory.mktemp("tls"), name="secrets")


@pytest.fixture
def server(tmp_path: Path, tls_files: TlsFiles) -> Iterator[RedisServer]:
    users = [f"app on >{USER_PASSWORD} resetkeys ~s:* resetchannels +@all", "default off"]
    with RedisServer(directory=tmp_path / "redis", users=users, tls=tls_files) as server:
        yield server


def wait_until(done: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args],
        capture_output=True, text=True, timeout=60, cwd=cwd, env={**os.environ, **env},
    )  # fmt: skip


@pytest.mark.redis
def test_cli_outputs_hold_no_secret(
    server: RedisServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    url = (
        f"{server.url_for('app', USER_PASSWORD)}?prefix=s:"
        f"&ssl_ca_certs={tls_files.ca_cert}&ssl_password={SSL_PASSWORD}"
    )
    assert quote(USER_PASSWORD, safe="") in url
    assert url.startswith("rediss://")
    env = {"AGENTBUS_TRACING": ""}
    outputs: list[tuple[str, str]] = []

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = _cli(*args, cwd=tmp_path, env=env)
        outputs.append((" ".join(args[:2]), done.stdout + done.stderr))
        return done

    spans = tmp_path / "worker-spans.jsonl"
    log = tmp_path / "worker.log"
    command = [
        sys.executable,
        "-m",
        "agentbus",
        "-vv",
        "worker",
        APP,
        "--url",
        url,
        "--consumer",
        "w1",
    ]
    command += ["--max-attempts", "1", "--trace", f"jsonl:{spans}"]
    with log.open("w") as sink:
        worker = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        wait_until(lambda: "hosting" in log.read_text() or worker.poll() is not None)
        assert "hosting" in log.read_text(), log.read_text()
        run = cli("run", APP, "--url", url, "--no-agents", "--json")
        assert run.returncode == 0, run.stdout + run.stderr
        result = json.loads(run.stdout)
        assert "password=***" in result["result"]["error"]
        run_id = result["run_id"]
        runs = cli("runs", "--json", "--url", url)
        assert runs.returncode == 0, runs.stderr
        assert json.loads(runs.stdout)[0]["meta"]["url"].startswith("rediss://app:***@")
        trace = cli("trace", run_id, "--json", "--show-payloads", "--url", url)
        assert trace.returncode == 0, trace.stderr
        assert cli("trace", run_id, "--url", url).returncode == 0
        html = tmp_path / "trace.html"
        assert cli("trace", run_id, "--html", str(html), "--url", url).returncode == 0
        export = tmp_path / "run.jsonl"
        assert cli("export", run_id, "-o", str(export), "--url", url).returncode == 0
        dlq = cli("dlq", "list", "secrets.fail", "--json", "--url", url)
        assert dlq.returncode == 0, dlq.stderr
        assert "password=***" in dlq.stdout
    finally:
        worker.terminate()
        worker.wait(timeout=15)
    worker_output = log.read_text()
    assert "worker w1 hosting" in worker_output
    assert "rediss://app:***@" in worker_output
    assert "fetched https://files.example.test/f?token=***" in worker_output  # -vv logs
    bad = cli("runs", "--url", f"redis://app:{RAW_PASSWORD}@127.0.0.1:1/0")
    assert bad.returncode == 1, bad.stderr
    assert "invalid Redis URL 'redis://app:***@127.0.0.1:1/0'" in bad.stderr
    assert "percent-encode" in bad.stderr
    exported = export.read_text()
    assert '"type":"agentbus.journal.tool_call"' in exported
    assert "token=***" in exported
    files = [("export", exported), ("html", html.read_text()), ("spans", spans.read_text())]
    for label, text in [("worker", worker_output), *outputs, *files]:
        assert_clean(label, text)
