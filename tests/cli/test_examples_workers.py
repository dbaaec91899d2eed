"""Every example hosted by two `agentbus worker` processes on Redis, driven by `agentbus run
--no-agents`: the same events as the embedded run, every replica's deliveries in the trace,
and `agentbus replay` in one process reports the run identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentbus.testing.redis_cluster import LocalCluster
from agentbus.testing.workers import WorkerProcesses

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
#: The examples must work offline: no model endpoint, in the workers or the CLI.
OFFLINE = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "AGENTBUS_MODEL_URL": ""}
#: Examples whose agents fold a log on every replica (broadcast subscriptions).
FOLDING = {"incident_war_room", "task_auction"}


def agentbus(*args: str, cwd: Path, url: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, **OFFLINE, "AGENTBUS_URL": url or ""},
    )


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _events(run_id: str, cwd: Path, url: str | None = None) -> int:
    runs = _json(agentbus("runs", "--json", cwd=cwd, url=url))
    return int(next(r["events"] for r in runs if r["run_id"] == run_id))


def _deliveries(tree: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for node in tree:
        out += [{**d, "event": node["index"]} for d in node["deliveries"]]
        out += _deliveries(node["children"])
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """One throwaway 3-master Redis Cluster (with a replica each) for the module."""
    with LocalCluster(masters=3, replicas=1) as c:
        yield c


@pytest.fixture(params=["redis", "cluster"])
def where(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> str:
    """The URL of a single Redis, or of a Redis Cluster, under a fresh prefix."""
    if request.param == "redis":
        return f"{redis_url}?prefix={redis_prefix}"
    cluster: LocalCluster = request.getfixturevalue("cluster")
    return cluster.url_for(redis_prefix)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_on_two_workers_matches_the_embedded_run_and_replays_identically(
    example: Path, tmp_path: Path, where: str
) -> None:
    url = where
    with WorkerProcesses(url, str(example)) as workers:
        workers.start(consumer="w1", env=OFFLINE)
        workers.start(consumer="w2", env=OFFLINE)
        done = _json(agentbus("run", str(example), "--no-agents", "--json", cwd=tmp_path, url=url))
    assert done["status"] == "completed"
    run_id = done["run_id"]

    embedded = _json(agentbus("run", str(example), "--json", cwd=tmp_path))
    assert embedded["status"] == "completed"
    # Each logical agent answered once, however many processes hosted it.
    assert _events(run_id, tmp_path, url) == _events(embedded["run_id"], tmp_path)

    trace = _json(agentbus("trace", run_id, "--json", cwd=tmp_path, url=url))
    deliveries = _deliveries(trace["tree"])
    assert {d["consumer"] for d in deliveries} <= {"w1", "w2"}  # the workers did all the work
    # A broadcast event reaches every replica, and the trace lists each replica's delivery.
    per_replica = [d for d in deliveries if d.get("group")]
    if example.stem in FOLDING:
        assert per_replica
    for d in per_replica:
        assert d["group"] == f"{d['agent']}:{d['consumer']}"
        twins = {x["consumer"] for x in per_replica if (x["event"], x["agent"]) == (d["event"], d["agent"])}  # fmt: skip
        assert twins == {"w1", "w2"}, (d, twins)

    replay = agentbus("replay", run_id, "--json", cwd=tmp_path, url=url)
    result = json.loads(replay.stdout)
    assert replay.returncode == 0, result["divergence"]
    assert result["identical"] is True
    assert result["produced_events"] == result["recorded_events"] == _events(run_id, tmp_path, url)


def test_a_multi_topic_example_on_a_cluster_spreads_over_every_master(
    tmp_path: Path, cluster: LocalCluster, redis_prefix: str
) -> None:
    """The operator commands see every master, and the app's keys land on all of them."""
    url = cluster.url_for(redis_prefix)
    example = ROOT / "examples" / "support_desk.py"
    with WorkerProcesses(url, str(example)) as workers:
        workers.start(consumer="w1", env=OFFLINE)
        workers.start(consumer="w2", env=OFFLINE)
        done = _json(agentbus("run", str(example), "--no-agents", "--json", cwd=tmp_path, url=url))
    assert done["status"] == "completed"
    per_master = cluster.keys_per_master(f"{redis_prefix}*")
    assert len(per_master) == 3
    assert all(n > 0 for n in per_master.values()), per_master

    topics = {t["topic"] for t in _json(agentbus("topics", "--json", cwd=tmp_path, url=url))}
    assert {"desk.tickets", "desk.billing", "desk.tech", "desk.general"} <= topics
    runs = _json(agentbus("runs", "--json", cwd=tmp_path, url=url))
    assert done["run_id"] in {r["run_id"] for r in runs}
    out = tmp_path / "run.jsonl"
    exported = agentbus("export", done["run_id"], "-o", str(out), cwd=tmp_path, url=url)
    assert exported.returncode == 0, exported.stderr
    recorded = next(r for r in runs if r["run_id"] == done["run_id"])
    # The run header, then one line per journal record.
    assert len(out.read_text().splitlines()) == 1 + recorded["records"]
    dlq = agentbus("dlq", "list", "desk.tickets", cwd=tmp_path, url=url)
    assert dlq.returncode == 0, dlq.stderr
