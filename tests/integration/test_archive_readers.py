"""Every reader works on an archived run as on a live one: the run is recorded on Redis,
inspected, archived to PostgreSQL, its Redis keys deleted, and inspected again through
the real CLI. Trace output in every format and the export must be byte for byte what
they were before archiving; replay (and a fork) must be identical to the recording."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from agentbus.testing.workers import WorkerProcesses, run_cli
from agentbus.transports import open_transport

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "llm_assistant.py"  # model and tool calls: tokens, a tape

pytestmark = pytest.mark.redis


def agentbus(*args: str, cwd: Path) -> str:
    done = run_cli(*args, cwd=cwd, timeout=120)
    assert done.returncode == 0, f"agentbus {' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


async def test_an_archived_run_reads_replays_and_exports_as_before(
    redis_url: str, redis_prefix: str, archive_url: str, tmp_path: Path
) -> None:
    url = f"{redis_url}?prefix={redis_prefix}"
    hot = ["--url", url]
    both = [*hot, "--journal-url", archive_url]
    out = agentbus("run", str(EXAMPLE), *hot, cwd=tmp_path)
    run_id = out.split("run id: ")[1].split()[0]

    views = {
        "tree": ["trace", run_id, "--show-payloads"],
        "timeline": ["trace", run_id, "--timeline"],
        "json": ["trace", run_id, "--json", "--show-payloads"],
        "agent": ["trace", run_id, "--agent", "assistant"],
    }
    before = {name: agentbus(*argv, *hot, cwd=tmp_path) for name, argv in views.items()}
    agentbus("export", run_id, "-o", "before.jsonl", *hot, cwd=tmp_path)
    agentbus("trace", run_id, "--html", "before.html", *hot, cwd=tmp_path)
    listed_hot = json.loads(agentbus("runs", "--json", *hot, cwd=tmp_path))
    assert [r["run_id"] for r in listed_hot] == [run_id]

    # Archive, then delete everything the test's prefix holds in Redis: the run must now
    # come from PostgreSQL alone.
    agentbus("db", "upgrade", *both, cwd=tmp_path)
    report = json.loads(agentbus("archive", "--older-than", "0s", "--json", *both, cwd=tmp_path))
    assert report["archived"] == [run_id]
    transport = open_transport(url)
    await transport.connect()
    try:
        assert await transport.store.get_run(run_id) is None  # the archiver freed it
        await transport.admin.delete_prefix()
        assert await transport.store.list_runs() == []
    finally:
        await transport.aclose()

    missing = run_cli("trace", run_id, *hot, cwd=tmp_path)
    assert missing.returncode == 2
    assert "no recorded run" in missing.stderr
    after = {name: agentbus(*argv, *both, cwd=tmp_path) for name, argv in views.items()}
    assert after == before
    prefix = agentbus("trace", run_id[:12], "--json", *both, cwd=tmp_path)
    assert json.loads(prefix)["run"]["run_id"] == run_id
    agentbus("export", run_id, "-o", "after.jsonl", *both, cwd=tmp_path)
    assert (tmp_path / "after.jsonl").read_bytes() == (tmp_path / "before.jsonl").read_bytes()
    agentbus("trace", run_id, "--html", "after.html", *both, cwd=tmp_path)
    assert (tmp_path / "after.html").read_bytes() == (tmp_path / "before.html").read_bytes()

    listed = json.loads(agentbus("runs", "--json", *both, cwd=tmp_path))
    assert [r["run_id"] for r in listed] == [run_id]
    assert listed[0]["tokens"] == listed_hot[0]["tokens"] > 0
    assert listed[0]["cost"] == 0.0  # the offline model, the only one priced by default
    assert listed[0]["input_tokens"] + listed[0]["output_tokens"] == listed[0]["tokens"]

    # Replay and a fork of the archived run are identical to the recording; the new runs
    # are recorded hot (Redis), next to the archived one.
    replay = json.loads(agentbus("replay", run_id, "--json", *both, cwd=tmp_path))
    assert replay["verdict"] == "identical", replay
    published = json.loads(before["json"])["events"]
    assert published >= 2
    fork = json.loads(
        agentbus("replay", run_id, "--fork-at", str(published // 2), "--json", *both, cwd=tmp_path)
    )
    assert fork["verdict"] == "identical", fork
    diff = run_cli("diff", run_id, replay["run_id"], *both, cwd=tmp_path)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    runs = json.loads(agentbus("runs", "--json", *both, cwd=tmp_path))
    assert {r["run_id"] for r in runs} == {run_id, replay["run_id"], fork["run_id"]}


async def test_runs_filters_reach_both_tiers(
    redis_url: str, redis_prefix: str, archive_url: str, tmp_path: Path
) -> None:
    url = f"{redis_url}?prefix={redis_prefix}"
    both = ["--url", url, "--journal-url", archive_url]
    agentbus("db", "upgrade", *both, cwd=tmp_path)

    def run(example: str) -> str:
        out = agentbus("run", str(ROOT / "examples" / example), "--url", url, cwd=tmp_path)
        return out.split("run id: ")[1].split()[0]

    desk = run("support_desk.py")
    agentbus("archive", "--older-than", "0s", *both, cwd=tmp_path)  # desk is archived
    assistant = run("llm_assistant.py")  # this one stays hot

    def ids(*conditions: str) -> list[str]:
        listed = json.loads(agentbus("runs", "--json", *conditions, *both, cwd=tmp_path))
        return [r["run_id"] for r in listed]

    assert ids() == [assistant, desk]
    assert ids("--name", "support-desk") == [desk]
    assert ids("--name", "llm-assistant") == [assistant]
    assert ids("--status", "completed") == [assistant, desk]
    assert ids("--status", "failed") == []
    assert ids("--agent", "assistant") == [assistant]
    assert ids("--agent", "billing") == [desk]
    assert ids("--type", "desk.Ticket") == [desk]
    assert ids("--since", "1h") == [assistant, desk]
    assert ids("--until", "1h") == []
    assert ids("--since", "2999-01-01") == []
    assert ids("--limit", "1") == [assistant]
    table = agentbus("runs", "--name", "support-desk", *both, cwd=tmp_path)
    assert "COST" in table.splitlines()[0]
    assert desk in table
    bad = run_cli("runs", "--since", "yesterday-ish", *both, cwd=tmp_path)
    assert bad.returncode == 2
    assert "invalid time" in bad.stderr


def test_archive_without_a_journal_url_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("archive", "--url", "memory://", cwd=tmp_path, env={"AGENTBUS_JOURNAL_URL": ""})
    assert done.returncode == 2
    assert "needs a journal archive: --journal-url" in done.stderr


def test_a_journal_url_of_another_kind_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("runs", "--journal-url", "mysql://x/y", cwd=tmp_path)
    assert done.returncode == 2
    assert "unsupported journal URL" in done.stderr


async def test_readers_stop_with_the_upgrade_command_when_the_schema_is_behind(
    archive_url: str, tmp_path: Path
) -> None:
    done = run_cli(
        "runs", "--url", "memory://?journal=", "--journal-url", archive_url, cwd=tmp_path
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "agentbus db upgrade" in done.stderr
    upgraded = run_cli("db", "upgrade", "--journal-url", archive_url, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "applied migrations 1" in upgraded.stdout
    again = run_cli("db", "upgrade", "--journal-url", archive_url, cwd=tmp_path)
    assert "is up to date" in again.stdout
    ok = run_cli("runs", "--url", "memory://?journal=", "--journal-url", archive_url, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_worker_refuses_a_retention_shorter_than_the_archive_delay(tmp_path: Path) -> None:
    done = run_cli(
        "worker",
        "examples.support_desk:app",
        "--url",
        "memory://",
        "--journal-url",
        "postgresql://127.0.0.1:1/x",
        "--archive-after",
        "2h",
        "--journal-retention",
        "1h",
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "would delete runs before --archive-after 2h archives them" in done.stderr


async def test_a_worker_archives_finished_runs_in_the_background(
    redis_url: str, redis_prefix: str, archive_url: str, tmp_path: Path
) -> None:
    url = f"{redis_url}?prefix={redis_prefix}"
    both = ["--url", url, "--journal-url", archive_url]
    agentbus("db", "upgrade", *both, cwd=tmp_path)
    extra = ["--journal-url", archive_url, "--archive-after", "0s"]
    with WorkerProcesses(url, "examples.support_desk:app") as workers:
        workers.start(extra=[*extra, "--maintenance-interval", "0.5s"])
        out = agentbus("run", "examples/support_desk.py", "--no-agents", "--url", url, cwd=ROOT)
        run_id = out.split("run id: ")[1].split()[0]
        transport = open_transport(url)
        await transport.connect()
        try:
            deadline = time.monotonic() + 30
            while await transport.store.get_run(run_id) is not None:
                assert time.monotonic() < deadline, "the worker did not archive the run"
                await asyncio.sleep(0.2)
        finally:
            await transport.aclose()
    assert any("archives runs finished 0s ago" in line for line in workers.output)
    listed = json.loads(agentbus("runs", "--json", "--name", "support-desk", *both, cwd=tmp_path))
    assert [r["run_id"] for r in listed] == [run_id]
    assert listed[0]["events"] == 16
    tree = json.loads(agentbus("trace", run_id, "--json", *both, cwd=tmp_path))
    assert tree["events"] == 16
