"""Who gets in: ACL users, passwords, TLS, signed envelopes, and secrets kept out of sight.

The ACL and TLS tests start their own ``redis-server`` (free loopback port, temp dir);
signing runs on both backends.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentbus import (
    Agent,
    Context,
    Envelope,
    MemoryTransport,
    Message,
    RequestTimeout,
    Runtime,
    Signer,
    TransportUnavailable,
    UsageError,
    handle,
)
from agentbus.testing import wait_for
from agentbus.testing.redis_server import RedisServer, TlsFiles, make_test_certificates
from agentbus.transports import Transport

PASSWORD = "pw-Zq81-never-print-me"
API_KEY = "sk-test-4f9c2d7e1b3a-never-print-me"
REPO = Path(__file__).resolve().parents[2]


class Note(Message, type="sec.Note"):
    text: str


class Echoed(Message, type="sec.Echoed"):
    text: str


class Keeper(Agent, name="sec-keeper"):
    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []

    @handle("sec.notes", output="sec.echoed")
    async def keep(self, note: Note, ctx: Context) -> Echoed:
        self.notes.append(note.text)
        return Echoed(text=note.text)

    @handle("sec.ask")
    async def answer(self, note: Note, ctx: Context) -> Echoed:
        return Echoed(text=note.text.upper())

    @handle("sec.once", dedupe=True)
    async def once(self, note: Note, ctx: Context) -> None:
        self.notes.append("once:" + note.text)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=env,
    )  # fmt: skip


# -- ACL and passwords ----------------------------------------------------------------------------
@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    # Only the "agent" user exists, and it may touch nothing outside "sec:".
    users = [
        f"agent on >{PASSWORD} resetkeys ~sec:* resetchannels +@all -@dangerous",
        "default off",
    ]
    with RedisServer(directory=tmp_path / "redis", users=users) as server:
        yield server


@pytest.mark.redis
async def test_a_user_restricted_to_the_prefix_can_do_everything(acl_server: RedisServer) -> None:
    url = acl_server.url_for("agent", PASSWORD) + "?prefix=sec:"
    keeper = Keeper()
    async with Runtime(url) as rt:
        rt.add(keeper)
        async with rt.run("acl") as run:
            await run.publish("sec.notes", Note(text="hello"))
            reply = await run.request("sec.ask", Note(text="quiet"), expect=Echoed, timeout=10)
            await run.publish("sec.once", Note(text="x"))
        assert reply.text == "QUIET"
        await wait_for(
            lambda: keeper.notes == ["hello", "once:x"] or set(keeper.notes) == {"hello", "once:x"}
        )
        await rt.idle()
        kinds = {r.kind for r in await rt.journal.records(run.run_id)}
        assert {"published", "delivered", "handled", "replied"} <= kinds
        topics = {t.topic for t in await rt.transport.admin.topics()}
        assert {"sec.notes", "sec.echoed", "sec.once"} <= topics
    listing = _cli("topics", "--json", "--url", url)
    assert listing.returncode == 0, listing.stderr
    assert "sec.notes" in listing.stdout


@pytest.mark.redis
async def test_a_prefix_outside_the_acl_is_refused_clearly(acl_server: RedisServer) -> None:
    url = acl_server.url_for("agent", PASSWORD) + "?prefix=other:"
    async with Runtime(url) as rt:
        with pytest.raises(TransportUnavailable) as info:
            async with rt.run("outside"):
                pass
    message = str(info.value)
    assert "refused us" in message
    assert "permission" in message.lower()
    assert PASSWORD not in message


@pytest.mark.redis
async def test_wrong_credentials_fail_fast_without_printing_the_password(
    acl_server: RedisServer,
) -> None:
    url = acl_server.url_for("agent", "wrong-" + PASSWORD)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TransportUnavailable) as info:
        async with Runtime(url):
            pass
    assert loop.time() - started < 3.0  # refused at once: no point retrying a bad password
    message = str(info.value)
    assert "refused us" in message
    assert "password" in message
    assert PASSWORD not in message
    assert f"127.0.0.1:{acl_server.port}" in message
    assert "agent:***@" in message

    proc = _cli("worker", "tests/integration/reliability_app.py:app", "--url", url)
    assert proc.returncode == 1
    assert "refused us" in proc.stderr
    assert PASSWORD not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.redis
async def test_requirepass_default_user(tmp_path: Path) -> None:
    with RedisServer(directory=tmp_path / "redis", password=PASSWORD) as server:
        async with Runtime(server.url + "?prefix=sec:") as rt:
            assert PASSWORD not in rt.transport.url
            async with rt.run("default-user"):
                await rt.publish("sec.notes", Note(text="in"))
        with pytest.raises(TransportUnavailable) as info:
            async with Runtime(server.url_for(None, None)):
                pass
        assert "refused us" in str(info.value) or "Authentication" in str(info.value)


# -- TLS ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[TlsFiles, TlsFiles]:
    """A CA the server uses, and an unrelated one."""
    d = tmp_path_factory.mktemp("tls")
    return make_test_certificates(d, name="good"), make_test_certificates(d, name="rogue")


@pytest.fixture
def tls_server(tmp_path: Path, certificates: tuple[TlsFiles, TlsFiles]) -> Iterator[RedisServer]:
    with RedisServer(directory=tmp_path / "redis", tls=certificates[0]) as server:
        yield server


@pytest.mark.redis
async def test_rediss_with_the_right_ca_works_end_to_end(
    tls_server: RedisServer, certificates: tuple[TlsFiles, TlsFiles]
) -> None:
    url = f"{tls_server.url}?prefix=sec:&ssl_ca_certs={certificates[0].ca_cert}"
    assert url.startswith("rediss://")
    keeper = Keeper()
    async with Runtime(url) as rt:
        rt.add(keeper)
        async with rt.run("tls") as run:
            reply = await run.request("sec.ask", Note(text="over tls"), expect=Echoed, timeout=10)
        assert reply.text == "OVER TLS"


@pytest.mark.redis
async def test_rediss_with_a_wrong_ca_fails_clearly(
    tls_server: RedisServer, certificates: tuple[TlsFiles, TlsFiles]
) -> None:
    url = f"{tls_server.url}?prefix=sec:&ssl_ca_certs={certificates[1].ca_cert}"
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TransportUnavailable) as info:
        async with Runtime(url):
            pass
    assert loop.time() - started < 3.0  # a certificate that fails now fails forever
    message = str(info.value)
    assert "TLS with Redis at 'rediss://127.0.0.1:" in message
    assert "certificate verify failed" in message
    assert "ssl_ca_certs" in message


@pytest.mark.redis
async def test_plain_redis_url_against_a_tls_port_fails(tls_server: RedisServer) -> None:
    url = tls_server.url.replace("rediss://", "redis://")
    with pytest.raises(TransportUnavailable) as info:
        async with Runtime(url):
            pass
    assert f"127.0.0.1:{tls_server.port}" in str(info.value)


# -- signed envelopes -------------------------------------------------------------------------------
KEY_1 = b"k1-secret-0123456789abcdef-0123456789"
KEY_2 = b"k2-secret-fedcba9876543210-9876543210"


@pytest.fixture
async def shared(backend: str, url_for: str) -> AsyncIterator[tuple[str | None, Transport | None]]:
    """How two runtimes reach one store: a URL (Redis) or one shared transport (memory)."""
    if backend == "memory":
        transport = MemoryTransport()
        yield None, transport
        await transport.aclose()
    else:
        yield url_for, None


def _runtime(
    where: tuple[str | None, Transport | None], signer: Signer | None, **opts: Any
) -> Runtime:
    url, transport = where
    return Runtime(url, transport=transport, signer=signer, block_ms=100, **opts)


async def _dead(rt: Runtime, topic: str, n: int) -> list[Any]:
    async def enough() -> bool:
        return len(await rt.transport.admin.dead_letters(topic)) >= n

    await wait_for(enough, timeout=10, message=f"{n} dead letters on {topic}")
    return await rt.transport.admin.dead_letters(topic)


async def test_signed_events_are_handled_and_others_dead_lettered(
    shared: tuple[str | None, Transport | None],
) -> None:
    signer = Signer({"k1": KEY_1}, "k1")
    keeper = Keeper()
    async with _runtime(shared, signer) as guarded, _runtime(shared, None) as outsider:
        guarded.add(keeper)
        await asyncio.sleep(0.1)
        async with guarded.run("signed"):
            await guarded.publish("sec.notes", Note(text="signed"))
        await wait_for(lambda: keeper.notes == ["signed"], message="the signed note handled")

        # Unsigned, from a runtime without the key.
        async with outsider.run("unsigned"):
            await outsider.publish("sec.notes", Note(text="unsigned"))
        # Tampered: a validly signed event with its data changed on the way.
        env = Envelope.for_message(Note(text="genuine"), source="client", topic="sec.notes")
        signer.sign(env)
        env.data = {"text": "tampered"}
        await guarded.transport.publish("sec.notes", env.encode())
        # Signed with a key the runtime does not know.
        stranger = Envelope.for_message(Note(text="stranger"), source="client", topic="sec.notes")
        Signer({"k9": KEY_2}, "k9").sign(stranger)
        await guarded.transport.publish("sec.notes", stranger.encode())
        # Right key id, wrong secret.
        forged = Envelope.for_message(Note(text="forged"), source="client", topic="sec.notes")
        Signer({"k1": KEY_2}, "k1").sign(forged)
        await guarded.transport.publish("sec.notes", forged.encode())

        letters = await _dead(guarded, "sec.notes", 4)
        assert [d.reason for d in letters] == ["bad signature"] * 4
        errors = [d.error for d in letters]
        assert "unsigned" in errors[0]
        assert "does not match" in errors[1]
        assert "unknown signing key id 'k9'" in errors[2]
        assert "does not match" in errors[3]
        await guarded.idle()
        assert keeper.notes == ["signed"]  # none of them reached the handler


async def test_key_rotation(shared: tuple[str | None, Transport | None]) -> None:
    old, both_old, both_new, new = (
        Signer({"k1": KEY_1}, "k1"),
        Signer({"k1": KEY_1, "k2": KEY_2}, "k1"),
        Signer({"k1": KEY_1, "k2": KEY_2}, "k2"),
        Signer({"k2": KEY_2}, "k2"),
    )
    keeper = Keeper()
    async with _runtime(shared, both_old) as consumer:
        consumer.add(keeper)
        await asyncio.sleep(0.1)
        for n, publisher_signer in enumerate((old, both_old, both_new, new)):
            async with (
                _runtime(shared, publisher_signer) as publisher,
                publisher.run(f"rotate-{n}"),
            ):
                await publisher.publish("sec.notes", Note(text=f"n{n}"))
        await wait_for(lambda: len(keeper.notes) == 4, message="all four handled during rotation")
    # After the old key is dropped everywhere, what it signed is refused.
    keeper2 = Keeper()
    async with _runtime(shared, new) as consumer, _runtime(shared, old) as late:
        consumer.add(keeper2)
        await asyncio.sleep(0.1)
        async with late.run("too-late"):
            await late.publish("sec.notes", Note(text="old key"))
        letters = await _dead(consumer, "sec.notes", 1)
        assert "unknown signing key id 'k1'" in letters[-1].error
        assert keeper2.notes == []


async def test_a_forged_reply_does_not_answer_a_request() -> None:
    transport = MemoryTransport()
    signer = Signer({"k1": KEY_1}, "k1")
    async with (
        Runtime(transport=transport, signer=signer) as asker,
        Runtime(transport=transport) as impostor,
    ):
        impostor.add(Keeper())  # answers, but cannot sign
        async with asker.run("forged-reply"):
            with pytest.raises(RequestTimeout):
                await asker.request("sec.ask", Note(text="hi"), timeout=0.5)
    await transport.aclose()


def test_signer_from_env_and_its_errors_never_show_secrets() -> None:
    b64 = base64.b64encode(KEY_1).decode()
    b64_2 = base64.b64encode(KEY_2).decode()
    assert Signer.from_env({}) is None
    one = Signer.from_env({"AGENTBUS_SIGNING_KEYS": f"k1:{b64}"})
    assert one is not None
    assert one.active == "k1"
    two = Signer.from_env(
        {"AGENTBUS_SIGNING_KEYS": f"k1:{b64}, k2:{b64_2}", "AGENTBUS_SIGNING_KEY_ID": "k2"}
    )
    assert two is not None
    assert two.active == "k2"
    assert two.key_ids == ["k1", "k2"]
    assert b64 not in repr(two)
    assert KEY_1.decode() not in repr(two)
    bad = [
        {"AGENTBUS_SIGNING_KEYS": f"k1:{b64},k2:{b64_2}"},  # which one signs?
        {"AGENTBUS_SIGNING_KEYS": f"k1:{b64}", "AGENTBUS_SIGNING_KEY_ID": "k3"},
        {"AGENTBUS_SIGNING_KEYS": "k1:not base64!"},
        {"AGENTBUS_SIGNING_KEYS": f"{b64}"},
        {"AGENTBUS_SIGNING_KEYS": "k1:" + base64.b64encode(b"short").decode()},
    ]
    for environ in bad:
        with pytest.raises(UsageError) as info:
            Signer.from_env(environ)
        assert b64 not in str(info.value)
        assert "short" not in str(info.value)


@pytest.mark.redis
@pytest.mark.slow
async def test_a_worker_configured_from_the_environment_verifies(
    redis_url: str, redis_prefix: str
) -> None:
    url = f"{redis_url}?prefix={redis_prefix}"
    env = {
        **os.environ,
        "AGENTBUS_SIGNING_KEYS": "k1:" + base64.b64encode(KEY_1).decode(),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 - a worker in the background, not awaited
        [sys.executable, "-m", "agentbus", "worker", "tests/integration/reliability_app.py:app",
         "--url", url, "--consumer", "signed-worker"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "hosting" in proc.stdout.readline()
        spec = __import__("importlib.util").util.spec_from_file_location(
            "reliability_app", REPO / "tests/integration/reliability_app.py"
        )
        module = __import__("importlib.util").util.module_from_spec(spec)
        spec.loader.exec_module(module)
        async with (
            Runtime(url, signer=Signer({"k1": KEY_1}, "k1")) as signed,
            Runtime(url, signer=None) as unsigned,
        ):
            unsigned.signer = None  # the environment of this process has no keys anyway
            async with signed.run("env-signed"):
                await signed.publish("rel.items", module.Item(n=1))
            async with unsigned.run("env-unsigned"):
                await unsigned.publish("rel.items", module.Item(n=2))

            async def outcome() -> bool:
                done = await signed.transport.read_tail(
                    "rel.handled", "0-0", count=10, block_ms=None
                )
                dead = await signed.transport.admin.dead_letters("rel.items")
                return len(done) == 1 and len(dead) == 1

            await wait_for(outcome, timeout=20, message="one handled, one dead-lettered")
            [done] = await signed.transport.read_tail("rel.handled", "0-0", count=10, block_ms=None)
            assert Envelope.decode(done.payload or b"").data["n"] == 1
            [dead] = await signed.transport.admin.dead_letters("rel.items")
            assert dead.reason == "bad signature"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()


# -- secrets stay out of sight -------------------------------------------------------------------------
class Caller(Agent, name="sec-caller"):
    @handle("sec.call")
    async def call(self, note: Note, ctx: Context) -> None:
        async def live() -> dict[str, Any]:
            return {"ok": True, "usage": {"prompt_tokens": 3, "completion_tokens": 1}}

        async def broken() -> dict[str, Any]:
            raise ConnectionError(
                f"GET https://user:{API_KEY}@api.example.test/v1 failed; "
                f"sent Authorization: Bearer {API_KEY}"
            )

        request = {
            "url": f"https://user:{API_KEY}@api.example.test/v1",
            "headers": {"Authorization": f"Bearer {API_KEY}", "Accept": "application/json"},
            "api_key": API_KEY,
            "max_tokens": 10,
        }
        result = await ctx.invoke("tool", "fetch", request, live)
        assert result["ok"]
        if note.text == "fail":
            await ctx.invoke("tool", "fetch", request, broken)


@pytest.mark.redis
async def test_secrets_never_reach_journal_logs_traces_or_errors(
    acl_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentbus.tracing import OpenTelemetryTracer

    caplog.set_level(logging.DEBUG)
    url = acl_server.url_for("agent", PASSWORD) + "?prefix=sec:"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OpenTelemetryTracer(tracer_provider=provider, capture_content=True, metrics=False)
    errors: list[str] = []
    async with Runtime(url, tracer=tracer, max_attempts=1) as rt:
        rt.add(Caller())
        async with rt.run("secrets", meta={"url": rt.transport.url}) as run:
            await rt.publish("sec.call", Note(text="ok"))
            await rt.publish("sec.call", Note(text="fail"))
            letters = await _dead(rt, "sec.call", 1)
        await rt.idle()
        records = await rt.journal.records(run.run_id)
        calls = [r.record for r in records if r.kind == "tool_call"]
        assert len(calls) == 3
        assert calls[0]["request"]["headers"] == {
            "Authorization": "***",
            "Accept": "application/json",
        }
        assert calls[0]["request"]["max_tokens"] == 10  # not a secret
        assert calls[0]["request"]["url"] == "https://user:***@api.example.test/v1"
        assert "Bearer ***" in calls[2]["error"]
        errors.extend(d.error for d in letters)
        journal_text = json.dumps([r.record for r in records])
        # And the transport's own view (every key under the prefix) holds no secret either.
        info = [t.to_dict() for t in await rt.transport.admin.topics()]
    # Logs at every level, with the outage path: point a runtime at a closed port.
    with pytest.raises(TransportUnavailable) as unreachable:
        async with Runtime(f"redis://agent:{PASSWORD}@127.0.0.1:1/0"):
            pass
    errors.append(str(unreachable.value))
    provider.shutdown()
    # Everything a span exporter sees: attributes, events (exceptions), status.
    traced = "\n".join(span.to_json() for span in exporter.get_finished_spans())
    assert "execute_tool fetch" in traced
    assert "Bearer ***" in traced  # the failed call's error, masked
    runs = _cli("runs", "--json", "--url", url)
    trace = _cli("trace", run.run_id, "--json", "--url", url)
    everything = "\n".join(
        [journal_text, json.dumps(info), traced, *errors, runs.stdout, runs.stderr,
         trace.stdout, trace.stderr, *(r.getMessage() for r in caplog.records)]
    )  # fmt: skip
    assert runs.returncode == 0, runs.stderr + trace.stderr
    assert trace.returncode == 0, runs.stderr + trace.stderr
    assert API_KEY not in everything
    assert PASSWORD not in everything
