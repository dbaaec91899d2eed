"""Dead workers' broadcast groups and reply inboxes are pruned; live ones' are kept.

Real ``agentbus worker`` subprocesses on the shared test Redis: one is SIGKILLed while
it holds a broadcast entry in hand and after it made requests, so it leaves its group
(which holds back trimming of the topic) and its inbox behind.
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

from agentbus import Envelope, Runtime
from agentbus.testing import wait_for
from agentbus.testing.workers import WorkerProcesses
from agentbus.transports import Transport

pytestmark = [pytest.mark.redis, pytest.mark.slow]

APP = str(Path(__file__).with_name("prune_app.py")) + ":app"
_spec = importlib.util.spec_from_file_location(
    "prune_app", Path(__file__).with_name("prune_app.py")
)
assert _spec is not None
assert _spec.loader is not None
prune_app = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prune_app)
News = prune_app.News

# Dead after 2 s (a heartbeat every 0.5 s); the maintenance step runs every 0.3 s.
FAST = ("--dead-after", "2s", "--maintenance-interval", "0.3s")
SLOW = ("--dead-after", "1h")  # announces itself every 5 s, prunes nobody in these tests
# The survivor that prunes: 5 s, so that the victim's leftovers can be checked after the
# kill on a loaded machine before they go (2 s failed there now and then).
PRUNER = ("--dead-after", "5s", "--maintenance-interval", "0.3s")


@pytest.fixture
def workers(redis_url: str, redis_prefix: str) -> Iterator[WorkerProcesses]:
    with WorkerProcesses(f"{redis_url}?prefix={redis_prefix}", APP) as w:
        yield w


async def groups(t: Transport, topic: str) -> dict[str, tuple[int, int | None]]:
    """Each group of ``topic``: (pending, lag)."""
    for info in await t.admin.topics():
        if info.topic == topic:
            return {g.name: (g.pending, g.lag) for g in info.groups}
    return {}


async def topics(t: Transport) -> dict[str, int]:
    return {info.topic: info.length for info in await t.admin.topics()}


async def heard(t: Transport) -> set[tuple[int, str]]:
    entries = await t.read_tail("prune.heard", "0-0", count=10_000, block_ms=None)
    out = set()
    for d in entries:
        data = Envelope.decode(d.payload or b"").data
        out.add((data["n"], data["by"]))
    return out


async def leave_a_dead_worker(
    workers: WorkerProcesses, rt: Runtime, *, survivor: tuple[str, ...]
) -> None:
    """``victim`` makes a request, takes an entry it never finishes and is SIGKILLed."""
    workers.start(consumer="victim", extra=FAST)
    workers.start(consumer="survivor", extra=survivor)
    t = rt.transport
    await rt.publish("prune.news", News(n=1))
    await wait_for(
        lambda: _has(heard(t), {(1, "victim"), (1, "survivor")}),
        timeout=20,
        message="both workers heard news 1 (each made a request)",
    )
    await rt.publish("prune.news", News(n=2, hold_on="victim"))

    async def in_hand() -> bool:
        return (await groups(t, "prune.news")).get("listener:victim", (0, 0))[0] == 1

    await wait_for(in_hand, timeout=20, message="the victim holds news 2")
    # Checked before the kill: a pruning survivor may delete the victim's inbox soon after it.
    assert {"_inbox.victim", "_inbox.survivor"} <= set(await topics(t))
    workers.kill("victim")
    await rt.publish("prune.news", News(n=3))  # never delivered to the victim's group
    await wait_for(
        lambda: _has(heard(t), {(2, "survivor"), (3, "survivor")}),
        timeout=20,
        message="the survivor heard news 2 and 3",
    )


async def _has(result: Any, wanted: set[tuple[int, str]]) -> bool:
    return wanted <= await result


async def test_a_killed_workers_group_and_inbox_are_pruned_automatically(
    workers: WorkerProcesses,
) -> None:
    async with Runtime(workers.url) as rt:
        await leave_a_dead_worker(workers, rt, survivor=PRUNER)
        t = rt.transport
        # The victim's group holds news 2 (pending) and 3 (undelivered) back from trimming.
        assert (await groups(t, "prune.news"))["listener:victim"] == (1, 1)

        async def pruned() -> bool:
            return "listener:victim" not in await groups(t, "prune.news") and (
                "_inbox.victim" not in await topics(t)
            )

        # The survivor's maintenance step does it once the victim is 5 s out of sight.
        await wait_for(pruned, timeout=20, message="the victim's group and inbox pruned")
        assert "listener:survivor" in await groups(t, "prune.news")
        assert "_inbox.survivor" in await topics(t)

        async def trimmed() -> bool:
            return (await topics(t))["prune.news"] == 0

        await wait_for(trimmed, timeout=10, message="prune.news trimmed after the prune")
        # The survivor, alive all along, still hears news (its group and inbox work).
        await rt.publish("prune.news", News(n=4))
        await wait_for(lambda: _has(heard(t), {(4, "survivor")}), timeout=20, message="news 4")


def agentbus(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args, "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AGENTBUS_URL": ""},
    )


async def test_agentbus_prune_lists_and_removes_a_killed_workers_leftovers(
    workers: WorkerProcesses,
) -> None:
    async with Runtime(workers.url) as rt:
        await leave_a_dead_worker(workers, rt, survivor=SLOW)
        t = rt.transport

        def listed() -> list[dict[str, Any]]:
            done = agentbus("prune", "--older-than", "2s", "--dry-run", "--json", url=workers.url)
            assert done.returncode == 0, done.stderr
            body = json.loads(done.stdout)
            assert body["dry_run"] is True
            return list(body["dead"])

        dead: list[dict[str, Any]] = []

        def victim_listed() -> bool:
            dead[:] = listed()
            return bool(dead)

        await wait_for(victim_listed, timeout=20, interval=0.5, message="the victim listed")
        assert [(d["consumer"], d["groups"], d["inbox"]) for d in dead] == [
            ("victim", [{"topic": "prune.news", "group": "listener:victim"}], "_inbox.victim")
        ]
        assert "listener:victim" in await groups(t, "prune.news")  # a dry run deletes nothing

        done = agentbus("prune", "--older-than", "2s", url=workers.url)

        assert done.returncode == 0, done.stderr
        assert "victim" in done.stdout
        assert "pruned 1 workers not seen for 2s" in done.stdout
        assert list(await groups(t, "prune.news")) == ["listener:survivor"]
        assert "_inbox.victim" not in await topics(t)
        assert "_inbox.survivor" in await topics(t)
        # News 2 and 3, held back by the victim's group until now (news 1 may have gone
        # already: the victim's own maintenance trims every 0.3 s while it lives).
        assert await t.admin.trim_acknowledged("prune.news") >= 2
        assert (await topics(t))["prune.news"] == 0
        again = agentbus("prune", "--older-than", "2s", url=workers.url)
        assert "pruned 0 workers" in again.stdout
