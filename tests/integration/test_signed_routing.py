"""Signed routing, freshness, the signed journal and the least-privilege ACL, on real Redis.

The routing, freshness and journal tests use the shared Redis with a key prefix of their
own; the ACL test starts its own ``redis-server`` with the users documented in
``docs/operations.md`` ("Trust model and ACLs"), copied from that page.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from signed_app import Greeter, Hello

from agentbus import (
    Agent,
    Context,
    Envelope,
    Message,
    Runtime,
    Signer,
    TransportUnavailable,
    handle,
)
from agentbus.inspect import build_trace
from agentbus.keys import Keys
from agentbus.replay import UnverifiedRecords, replay_run
from agentbus.testing import wait_for
from agentbus.testing.raw_entries import add_raw
from agentbus.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

KEY = b"signed-routing-key-0123456789abcdef"
SIGNER = Signer({"k1": KEY}, "k1")
REPO = Path(__file__).resolve().parents[2]
APP_REF = str(Path(__file__).with_name("signed_app.py")) + ":app"
PASSWORD = "pw-least-privilege-7f3a"


def _cli(*args: str, keys: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTBUS_SIGNING")}
    if keys:
        env["AGENTBUS_SIGNING_KEYS"] = "k1:" + base64.b64encode(KEY).decode()
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args],
        capture_output=True, text=True, timeout=90, cwd=REPO, env=env,
    )  # fmt: skip


def _redis_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["redis-cli", "--no-auth-warning", *args], capture_output=True, text=True, timeout=10
    )


async def _dead(rt: Runtime, topic: str, n: int) -> list[Any]:
    async def enough() -> bool:
        return len(await rt.transport.admin.dead_letters(topic)) >= n

    await wait_for(enough, timeout=10, message=f"{n} dead letters on {topic}")
    return await rt.transport.admin.dead_letters(topic)


# -- routing and freshness -----------------------------------------------------------------------
async def test_a_signed_event_copied_into_another_topic_is_dead_lettered(
    redis_url: str, redis_prefix: str
) -> None:
    greeter = Greeter()
    async with Runtime(f"{redis_url}?prefix={redis_prefix}", signer=SIGNER, block_ms=100) as rt:
        rt.add(greeter)
        await rt.ready()
        async with rt.run("route") as run:
            await run.publish("signed.other", Hello(n=1))
        await wait_for(lambda: greeter.seen == [("other", 1)], message="the genuine event")
        # The stored entry, captured and XADDed byte for byte into another topic's stream.
        [entry] = await rt.transport.read_tail("signed.other", "0-0", count=10, block_ms=None)
        assert entry.payload is not None
        await add_raw(rt.transport, "signed.in", {"e": entry.payload})
        [letter] = await _dead(rt, "signed.in", 1)
        assert letter.reason == "topic mismatch"
        assert "signed for topic 'signed.other' but read from 'signed.in'" in letter.error
        await rt.idle()
        assert greeter.seen == [("other", 1)]  # never handled on signed.in
        # The same bytes in the topic they were signed for are still accepted.
        await add_raw(rt.transport, "signed.other", {"e": entry.payload})
        await wait_for(lambda: greeter.seen == [("other", 1)] * 2, message="the copy at home")


async def test_an_old_signed_event_past_max_age_is_dead_lettered(
    redis_url: str, redis_prefix: str
) -> None:
    signer = Signer({"k1": KEY}, "k1", max_age=60)
    greeter = Greeter()
    async with Runtime(f"{redis_url}?prefix={redis_prefix}", signer=signer, block_ms=100) as rt:
        rt.add(greeter)
        await rt.ready()
        old = Envelope.for_message(Hello(n=1), source="client", topic="signed.other")
        old.time = "2020-01-01T00:00:00.000000Z"
        signer.sign(old)  # validly signed, long ago
        await rt.transport.publish("signed.other", old.encode())
        async with rt.run("fresh") as run:
            await run.publish("signed.other", Hello(n=2))
        [letter] = await _dead(rt, "signed.other", 1)
        assert letter.reason == "event too old"
        assert "max_age is 60s" in letter.error
        await wait_for(lambda: greeter.seen == [("other", 2)], message="the fresh event")


async def test_a_lone_surrogate_with_a_signature_is_dead_lettered(
    redis_url: str, redis_prefix: str
) -> None:
    greeter = Greeter()
    payload = (
        b'{"specversion":"1.0","id":"\\ud800","source":"x","type":"signed.Hello",'
        b'"topic":"signed.other","data":{"n":1},"sigkid":"k1","sig":"AAAA"}'
    )
    async with Runtime(f"{redis_url}?prefix={redis_prefix}", signer=SIGNER, block_ms=100) as rt:
        rt.add(greeter)
        await rt.ready()
        await add_raw(rt.transport, "signed.other", {"e": payload})
        [letter] = await _dead(rt, "signed.other", 1)
        # Refused while parsing, before any signature is looked at (a lone surrogate is
        # not text); either way dead-lettered with a reason, never a crash.
        assert letter.reason == "invalid JSON"
        assert "surrogate" in letter.error
        # Acked with the dead letter: nothing left pending for the group.
        topics = {t.topic: t for t in await rt.transport.admin.topics()}
        assert [g.pending for g in topics["signed.other"].groups] == [0]
        assert greeter.seen == []


# -- the signed journal ----------------------------------------------------------------------------
async def test_a_forged_journal_record_is_flagged_by_trace_and_refused_by_replay(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    url = f"{redis_url}?prefix={redis_prefix}"
    greeter = Greeter()
    async with Runtime(url, signer=SIGNER, block_ms=100) as rt:
        rt.add(greeter)
        await rt.ready()
        async with rt.run("genuine", meta={"app": APP_REF}) as run:
            await run.publish("signed.in", Hello(n=1))
            await wait_for(lambda: greeter.seen == [("in", 1)], message="the input handled")
            await rt.idle()
        async with rt.run("elsewhere") as other:
            await other.publish("signed.other", Hello(n=7))
        await rt.idle()
        genuine = await rt.journal.records(run.run_id)
        elsewhere = await rt.journal.records(other.run_id)
        info = await rt.journal.run(run.run_id)
    assert {"published", "delivered", "handled", "tool_call"} <= {r.kind for r in genuine}
    assert build_trace(info, genuine, signer=SIGNER).signatures == {
        "records": len(genuine),
        "unverified": [],
    }
    # Signing does not get in the way of replay, and the replay's own records verify.
    replayed = await replay_run(run.run_id, url=url, signer=SIGNER)
    assert replayed.identical
    assert replayed.unverified == []
    async with Runtime(url, signer=SIGNER) as reader:
        copy = await reader.journal.records(replayed.run_id)
        copy_info = await reader.journal.run(replayed.run_id)
    assert build_trace(copy_info, copy, signer=SIGNER).signatures["unverified"] == []  # type: ignore[index]

    # An agent with write access to the journal stream but no key: a forged `published`
    # record, and a genuine signed record copied from another run.
    forged_event = Envelope.for_message(
        Hello(n=666), source="mallory", topic="signed.in", runid=run.run_id
    ).to_dict()
    forged = {
        "kind": "published",
        "time": time.time(),
        "event_id": forged_event["id"],
        "type": "signed.Hello",
        "topic": "signed.in",
        "agent": "mallory",
        "event": forged_event,
    }
    moved = next(r.record for r in elsewhere if r.kind == "published")
    journal_key = Keys(redis_prefix).journal(run.run_id)
    for record in (forged, moved):
        added = _redis_cli("-u", redis_url, "XADD", journal_key, "*", "c", json.dumps([record]))
        assert added.returncode == 0, added.stderr
    bad_ids = {forged_event["id"], moved["event"]["id"]}

    shown = _cli("trace", run.run_id, "--url", url)
    assert shown.returncode == 0, shown.stderr
    assert f"⚠ 2 of {len(genuine) + 2} journal records FAIL signature verification" in shown.stdout
    mallory = [line for line in shown.stdout.splitlines() if "from mallory" in line]
    assert len(mallory) == 1
    assert "⚠ UNVERIFIED" in mallory[0]
    client = [
        line for line in shown.stdout.splitlines() if "signed.Hello → signed.in  from c" in line
    ]
    assert client
    assert "UNVERIFIED" not in client[0]
    assert "the record is unsigned" in shown.stdout
    assert f"run '{run.run_id}'" in shown.stdout  # the moved record names the run it fails for

    as_json = _cli("trace", run.run_id, "--url", url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert {u["event_id"] for u in data["signatures"]["unverified"]} == bad_ids
    assert {u["kind"] for u in data["signatures"]["unverified"]} == {"published"}
    flagged = _walk(data["tree"])
    assert {e["id"] for e in flagged if e["unverified"]} == bad_ids
    assert all(not e["unverified"] for e in flagged if e["id"] not in bad_ids)

    page = tmp_path / "trace.html"
    as_html = _cli("trace", run.run_id, "--url", url, "--html", str(page))
    assert as_html.returncode == 0, as_html.stderr
    text = page.read_text(encoding="utf-8")
    start = text.index('<script id="trace-data" type="application/json">')
    embedded = text[text.index(">", start) + 1 : text.index("</script>", start)]
    d = json.loads(embedded.replace("<\\/", "</"))
    assert {u["event_id"] for u in d["signatures"]["unverified"]} == bad_ids
    assert {e["id"] for e in d["events"] if e["unverified"]} == bad_ids

    # Without the keys nothing is checked (and nothing claims to be).
    unchecked = _cli("trace", run.run_id, "--url", url, "--json", keys=False)
    assert json.loads(unchecked.stdout)["signatures"] is None

    # Replay refuses the run, through the API and the CLI.
    with pytest.raises(UnverifiedRecords) as info_exc:
        await replay_run(run.run_id, url=url, signer=SIGNER)
    assert len(info_exc.value.failed) == 2
    refused = _cli("replay", run.run_id, "--url", url)
    assert refused.returncode == 1
    assert "2 journal record(s) that fail signature verification" in refused.stderr
    assert "--allow-unverified" in refused.stderr
    # Allowed explicitly, it replays and lists them.
    allowed = await replay_run(run.run_id, url=url, signer=SIGNER, allow_unverified=True)
    assert {u["kind"] for u in allowed.unverified} == {"published"}
    assert len(allowed.unverified) == 2


def _walk(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in nodes:
        out.append(n)
        out.extend(_walk(n["children"]))
    return out


# -- least-privilege ACL ---------------------------------------------------------------------------
class Ping(Message, type="acl.Ping"):
    n: int


class AclWorker(Agent, name="acl-worker"):
    """One handler per path a worker takes through Redis."""

    def __init__(self, slow_s: float = 0.6) -> None:
        super().__init__()
        self.seen: list[int] = []
        self.slow_s = slow_s

    @handle("acl.in", output="acl.out")
    async def work(self, p: Ping, ctx: Context) -> Ping:
        await ctx.note("acl.step", n=p.n)

        async def double() -> dict[str, Any]:
            return {"n": 2 * p.n}

        await ctx.invoke("tool", "double", {"n": p.n}, double)
        self.seen.append(p.n)
        return Ping(n=p.n + 1)

    @handle("acl.ask")
    async def ask(self, p: Ping, ctx: Context) -> Ping:
        return Ping(n=p.n * 10)

    @handle("acl.once", dedupe=True)
    async def once(self, p: Ping, ctx: Context) -> None:
        await ctx.publish("acl.out", Ping(n=p.n))
        self.seen.append(100 + p.n)

    @handle("acl.bad")
    async def bad(self, p: Ping, ctx: Context) -> None:
        raise RuntimeError("boom")

    @handle("acl.slow")
    async def slow(self, p: Ping, ctx: Context) -> None:
        await asyncio.sleep(self.slow_s)  # longer than the lease: it is extended
        self.seen.append(-p.n)

    @handle("acl.all", mode="broadcast")
    async def every(self, p: Ping, ctx: Context) -> None:
        self.seen.append(1000 + p.n)


def _documented_rule(user: str) -> str:
    """The ACL line for ``user`` exactly as docs/operations.md gives it."""
    doc = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Trust model and ACLs") :]
    [line] = [x for x in section.splitlines() if x.startswith(f"user {user} on >PASSWORD ")]
    return line.removeprefix("user ").replace(">PASSWORD", f">{PASSWORD}")


@pytest.fixture
def least_privilege(tmp_path: Path) -> Iterator[RedisServer]:
    users = [_documented_rule("worker"), _documented_rule("operator"), "default off"]
    with RedisServer(directory=tmp_path / "redis", users=users) as server:
        yield server


async def test_the_documented_least_privilege_acl_runs_a_workflow_and_nothing_more(
    least_privilege: RedisServer,
) -> None:
    worker_url = least_privilege.url_for("worker", PASSWORD) + "?prefix=app:"
    operator_url = least_privilege.url_for("operator", PASSWORD) + "?prefix=app:"
    opts: dict[str, Any] = {
        "signer": SIGNER,
        "block_ms": 100,
        "visibility_timeout": 0.3,
        "max_attempts": 2,
        "retry_backoff": (0.01, 0.02),
    }
    worker = AclWorker()
    async with Runtime(worker_url, consumer="w1", **opts) as rt:
        rt.add(worker)
        await rt.ready()
        async with rt.run("acl") as run:
            await run.publish("acl.in", Ping(n=1))
            reply = await run.request("acl.ask", Ping(n=2), timeout=10)
            await run.publish("acl.once", Ping(n=3))
            await run.publish("acl.bad", Ping(n=4))
            await run.publish("acl.slow", Ping(n=5))
            await run.publish("acl.all", Ping(n=6))
            await wait_for(
                lambda: {1, 103, -5, 1006} <= set(worker.seen), message="every path handled"
            )
            assert [d.reason for d in await _dead(rt, "acl.bad", 1)] == ["handler failed"]
        assert reply.n == 20
        await rt.idle()
        kinds = {r.kind for r in await rt.journal.records(run.run_id)}
        assert {"published", "handled", "failed", "retried", "dead_lettered", "replied"} <= kinds
        assert {"tool_call", "step", "run_started", "run_finished"} <= kinds
    # A crash: a handler in flight when the worker stops stays pending ...
    slow = AclWorker(slow_s=30)
    async with Runtime(worker_url, consumer="w2", **opts) as crashed:
        crashed.add(slow)
        await crashed.ready()
        await crashed.publish("acl.slow", Ping(n=9))
        await wait_for(lambda: crashed.busy, message="the slow handler running")
        await crashed.stop(grace=0)
    # ... and the same consumer resumes its own pending entry on restart.
    resumed = AclWorker(slow_s=0)
    async with Runtime(worker_url, consumer="w2", **opts) as again:
        again.add(resumed)
        await wait_for(lambda: -9 in resumed.seen, message="the pending entry resumed")
        # Outside the rule: operator commands, dangerous commands, other keys.
        with pytest.raises(TransportUnavailable, match=r"(?i)permission"):
            await again.transport.admin.topics()  # XINFO, SCAN
    port = str(least_privilege.port)
    refused = _redis_cli("-p", port, "--user", "worker", "--pass", PASSWORD, "FLUSHALL")
    assert "NOPERM" in refused.stdout + refused.stderr
    outside = least_privilege.url_for("worker", PASSWORD) + "?prefix=other:"
    async with Runtime(outside, signer=SIGNER) as stranger:
        with pytest.raises(TransportUnavailable, match=r"(?i)permission"):
            await stranger.publish("acl.in", Ping(n=0))

    # The operator's rule covers the CLI.
    topics = _cli("topics", "--json", "--url", operator_url)
    assert topics.returncode == 0, topics.stderr
    assert "acl.in" in topics.stdout
    trace = _cli("trace", run.run_id, "--url", operator_url)
    assert trace.returncode == 0, trace.stderr
    assert "journal records verified" in trace.stdout
    letters = _cli("dlq", "list", "acl.bad", "--url", operator_url)
    assert letters.returncode == 0, letters.stderr
    assert "handler failed" in letters.stdout
