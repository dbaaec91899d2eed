"""Hierarchical supervisors on both transports: roll-up, escalation, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agentbus import Agent, Context, MemoryTransport, RemoteError, Runtime, UsageError, load_app
from agentbus.agents.offline import OfflineModel
from agentbus.patterns.hierarchical import (
    Delegation,
    Escalation,
    Hierarchy,
    ModelRouter,
    Node,
    Team,
)
from agentbus.patterns.hierarchical import budget as budget_of
from agentbus.patterns.orchestrator_worker import Job, JobResult, Orchestrator, Task, worker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MakeRuntime = Callable[..., Runtime]
WorkFn = Callable[[Task, Context], Any]


@pytest.fixture
async def make_runtime(backend: str, url_for: str) -> AsyncIterator[MakeRuntime]:
    """Runtimes that form one system: one shared memory transport, or one Redis prefix."""
    shared = MemoryTransport() if backend == "memory" else None
    made: list[Runtime] = []

    def make(**options: Any) -> Runtime:
        options = {"retry_backoff": (0.01, 0.05), "grace_period": 0.2, **options}
        rt = Runtime(transport=shared, **options) if shared else Runtime(url_for, **options)
        made.append(rt)
        return rt

    yield make
    for rt in reversed(made):
        await rt.aclose()
    if shared is not None:
        await shared.aclose()


def team(name: str, fn: WorkFn, *, timeout: float = 5.0) -> tuple[Team, list[Agent]]:
    """An orchestrator-worker team that does a job as one task with ``fn``."""
    lead = Orchestrator(
        name=f"{name}-team",
        topic=f"h.{name}.jobs",
        work_topic=f"h.{name}.tasks",
        plan=lambda job: [Task(title=name, text=job.goal)],
        aggregate=lambda job, results, failures: results[0].text,
        task_timeout=timeout,
        max_attempts=1,
    )
    return Team(name, f"h.{name}.jobs", timeout=timeout), [
        lead,
        worker(fn, topic=f"h.{name}.tasks", name=f"{name}-eng"),
    ]


def does(label: str) -> WorkFn:
    def work(task: Task, ctx: Context) -> str:
        return f"{label}: {task.text}"

    return work


def split_feature(job: Job) -> list[Delegation]:
    return [
        Delegation("frontend", f"screens for {job.goal}"),
        Delegation("backend", f"service for {job.goal}"),
    ]


def org(
    api: WorkFn | None = None,
    *,
    backend_escalation: Escalation | None = None,
    lead_escalation: Escalation | None = None,
    api_timeout: float = 5.0,
) -> tuple[Hierarchy, list[Agent]]:
    """lead -> [frontend team, backend -> [api team, storage team]]."""
    frontend, fe_agents = team("frontend", does("ui"))
    api_team, api_agents = team("api", api or does("api"), timeout=api_timeout)
    storage, st_agents = team("storage", does("db"))
    backend = Node(
        "backend",
        "h.backend",
        [api_team, storage],
        escalation=backend_escalation or Escalation(retries=0),
    )
    lead = Node(
        "lead",
        "h.lead",
        [frontend, backend],
        route=split_feature,
        escalation=lead_escalation or Escalation(retries=0),
    )
    hierarchy = Hierarchy(lead, max_depth=2, max_fanout=3)
    return hierarchy, [*hierarchy.agents(), *fe_agents, *api_agents, *st_agents]


async def steps(rt: Runtime, run_id: str, name: str) -> list[dict[str, Any]]:
    await rt.idle()
    return [
        r.record
        for r in await rt.journal.records(run_id)
        if r.kind == "step" and r.record.get("step") == name
    ]


async def run_job(rt: Runtime, h: Hierarchy, job: Job) -> tuple[str, JobResult]:
    async with rt.run("hier-test") as run:
        result = await run.request(h.topic, job, expect=JobResult, timeout=h.timeout)
    return run.run_id, result


async def test_happy_path_rolls_results_up_in_delegation_order(make_runtime: MakeRuntime) -> None:
    h, agents = org()
    rt = make_runtime()
    rt.add(*agents)
    async with rt:
        run_id, result = await run_job(rt, h, Job(id="f1", goal="saved searches"))
        assert result.status == "completed"
        assert [r.title for r in result.results] == ["frontend", "backend"]
        assert result.results[0].text == "ui: screens for saved searches"
        assert result.results[1].text == (
            "## api\napi: service for saved searches\n\n## storage\ndb: service for saved searches"
        )
        assert result.text.startswith("## frontend\nui: screens for saved searches\n\n## backend\n")
        routed = await steps(rt, run_id, "hier.routed")
        assert sorted(r["agent"] for r in routed) == ["backend", "lead"]
        received = await steps(rt, run_id, "hier.received")
        assert {r["node"]: r["lineage"] for r in received} == {"lead": [], "backend": ["lead"]}
        delegated = await steps(rt, run_id, "hier.delegated")
        assert sorted(d["sub_job"] for d in delegated) == [
            "f1/0.frontend",
            "f1/1.backend",
            "f1/1.backend/0.api",
            "f1/1.backend/1.storage",
        ]


async def test_failed_child_is_retried(make_runtime: MakeRuntime) -> None:
    calls = 0

    def flaky(task: Task, ctx: Context) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("api build broke")
        return "api: fixed"

    h, agents = org(flaky, backend_escalation=Escalation(retries=1))
    rt = make_runtime()
    rt.add(*agents)
    async with rt:
        run_id, result = await run_job(rt, h, Job(id="f2", goal="x"))
        assert result.status == "completed"
        assert "api: fixed" in result.results[1].text
        failed = await steps(rt, run_id, "hier.child_failed")
        assert [(f["child"], f["attempt"], f["next"]) for f in failed] == [("api", 1, "retry")]
        assert "api build broke" in failed[0]["error"]


async def test_failed_child_is_rerouted_to_a_sibling(make_runtime: MakeRuntime) -> None:
    def broken(task: Task, ctx: Context) -> str:
        raise RuntimeError("api team is out")

    h, agents = org(broken, backend_escalation=Escalation(retries=0, reroute={"api": "storage"}))
    rt = make_runtime()
    rt.add(*agents)
    async with rt:
        run_id, result = await run_job(rt, h, Job(id="f3", goal="x"))
        assert result.status == "completed"
        assert (
            result.results[1].text == "## api\ndb: service for x\n\n## storage\ndb: service for x"
        )
        rerouted = await steps(rt, run_id, "hier.rerouted")
        assert [(r["child"], r["to"]) for r in rerouted] == [("api", "storage")]


async def test_timed_out_child_is_retried_then_escalated_to_the_root(
    make_runtime: MakeRuntime,
) -> None:
    release = asyncio.Event()

    async def hangs(task: Task, ctx: Context) -> str:
        await release.wait()
        return "late"

    h, agents = org(hangs, backend_escalation=Escalation(retries=1), api_timeout=0.4)
    rt = make_runtime()
    rt.add(*agents)
    async with rt:
        with pytest.raises(RemoteError) as info:
            await run_job(rt, h, Job(id="f4", goal="x"))
        release.set()
    message = info.value.message
    assert info.value.error_type == "JobFailed"
    assert message.startswith("job 'f4' failed: child task 1 ('backend') failed after 1 attempt")
    assert "job 'f4/1.backend' failed: child task 0 ('api') failed after 2 attempts" in message
    assert "RequestTimeout" in message


async def test_report_policy_returns_a_partial_result_naming_the_failure(
    make_runtime: MakeRuntime,
) -> None:
    def broken(task: Task, ctx: Context) -> str:
        raise RuntimeError("api team is out")

    h, agents = org(
        broken,
        backend_escalation=Escalation(retries=0, on_failure="report"),
        lead_escalation=Escalation(retries=0, on_failure="report"),
    )
    rt = make_runtime()
    rt.add(*agents)
    async with rt:
        _run_id, result = await run_job(rt, h, Job(id="f5", goal="x"))
        assert result.status == "partial"
        assert [r.title for r in result.results] == ["frontend", "backend"]
        [failure] = result.failures
        assert (failure.index, failure.title, failure.attempts) == (1, "backend/api", 1)
        assert "api team is out" in failure.error
        assert "(failed: " in result.results[1].text


async def test_escalation_fails_the_job_at_the_parent(make_runtime: MakeRuntime) -> None:
    def broken(task: Task, ctx: Context) -> str:
        raise RuntimeError("api team is out")

    h, agents = org(broken)
    rt = make_runtime()
    rt.add(*agents)
    async with rt:
        async with rt.run("escalate") as run:
            with pytest.raises(RemoteError, match="api team is out"):
                await run.request(h.topic, Job(id="f6", goal="x"), timeout=h.timeout)
        escalated = await steps(rt, run.run_id, "hier.escalated")
        assert sorted(e["node"] for e in escalated) == ["backend", "lead"]


async def test_depth_and_loops_are_refused_at_run_time(make_runtime: MakeRuntime) -> None:
    _h, agents = org()
    rt = make_runtime()
    rt.add(*agents)
    async with rt, rt.run("guards") as run:
        with pytest.raises(RemoteError, match="max_depth is 2"):
            await run.request("h.backend", Job(id="deep", goal="x", lineage=["a", "b"]), timeout=10)
        with pytest.raises(RemoteError, match="came through supervisor 'backend' already"):
            await run.request(
                "h.backend", Job(id="loop", goal="x", lineage=["backend"]), timeout=10
            )


async def test_bad_routes_fail_the_job(make_runtime: MakeRuntime) -> None:
    frontend, agents = team("frontend", does("ui"))
    routes: dict[str, list[Delegation]] = {
        "none": [],
        "unknown": [Delegation("mobile", "x")],
        "too-many": [Delegation("frontend", "x")] * 3,
    }
    h = Hierarchy(
        Node("lead", "h.lead", [frontend], route=lambda job: routes[job.goal]), max_fanout=2
    )
    rt = make_runtime()
    rt.add(*h.agents(), *agents)
    async with rt, rt.run("routes") as run:
        for goal, reason in [
            ("none", "routed it to no child"),
            ("unknown", "unknown children ['mobile']"),
            ("too-many", "routed it to 3 children; max_fanout is 2"),
        ]:
            with pytest.raises(RemoteError, match=reason.replace("[", r"\[").replace("]", r"\]")):
                await run.request(h.topic, Job(id=goal, goal=goal), timeout=10)


async def test_model_router_routes_through_the_journal(make_runtime: MakeRuntime) -> None:
    routing = '{"delegations": [{"child": "storage", "goal": "tables"}, {"child": "api", "goal": "endpoints"}]}'
    api, api_agents = team("api", does("api"))
    storage, st_agents = team("storage", does("db"))
    h = Hierarchy(
        Node("lead", "h.lead", [api, storage], route=ModelRouter(OfflineModel(script=[routing])))
    )
    rt = make_runtime()
    rt.add(*h.agents(), *api_agents, *st_agents)
    async with rt:
        run_id, result = await run_job(rt, h, Job(id="m1", goal="saved searches"))
        assert [(r.title, r.text) for r in result.results] == [
            ("storage", "db: tables"),
            ("api", "api: endpoints"),
        ]
        await rt.idle()
        [call] = [r.record for r in await rt.journal.records(run_id) if r.kind == "model_call"]
        schema = call["request"]["response_schema"]
        assert schema["properties"]["delegations"]["items"]["properties"]["child"]["enum"] == [
            "api",
            "storage",
        ]


def test_configuration_limits_raise_usage_errors() -> None:
    leaf = Team("t", "h.t")
    deep = Node("a", "h.a", [Node("b", "h.b", [Node("c", "h.c", [leaf])])])
    with pytest.raises(UsageError, match=r"3 levels deep at 'a/b/c/t'; max_depth is 2"):
        Hierarchy(deep, max_depth=2)
    Hierarchy(deep, max_depth=3)
    wide = Node("a", "h.a", [Team(f"t{i}", f"h.t{i}") for i in range(4)])
    with pytest.raises(UsageError, match="has 4 children; max_fanout is 3"):
        Hierarchy(wide, max_fanout=3)
    with pytest.raises(UsageError, match="has no children"):
        Hierarchy(Node("a", "h.a", []))
    with pytest.raises(UsageError, match="supervisor names must be unique"):
        Hierarchy(Node("a", "h.a", [Node("a", "h.b", [leaf])]))
    with pytest.raises(UsageError, match="uses the topic of a supervisor"):
        Hierarchy(Node("a", "h.a", [Team("t", "h.a")]))
    with pytest.raises(UsageError, match="reroute 't' -> 'nobody'"):
        Hierarchy(Node("a", "h.a", [leaf], escalation=Escalation(reroute={"t": "nobody"})))
    with pytest.raises(UsageError, match="route of 'a' must be a function"):
        Hierarchy(Node("a", "h.a", [leaf], route="by keyword"))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="topic names"):
        Hierarchy(Node("a", "h a", [leaf]))


def test_derived_timeouts_cover_retries_and_reroutes() -> None:
    a, b = Team("a", "h.a", timeout=2.0), Team("b", "h.b", timeout=3.0)
    node = Node("n", "h.n", [a, b], escalation=Escalation(retries=1, reroute={"a": "b"}))
    assert budget_of(node) == 2 * 2.0 + 2 * 3.0 + 2.0
    top = Node("top", "h.top", [node], escalation=Escalation(retries=0))
    assert Hierarchy(top).timeout == budget_of(node) + 2.0
    assert budget_of(Node("x", "h.x", [a], timeout=1.5)) == 1.5


async def test_memory_and_redis_give_identical_results(redis_url: str, redis_prefix: str) -> None:
    def broken(task: Task, ctx: Context) -> str:
        raise RuntimeError("api team is out")

    outputs = []
    for url in ("memory://?journal=", f"{redis_url}?prefix={redis_prefix}"):
        h, agents = org(
            broken,
            backend_escalation=Escalation(retries=0, reroute={"api": "storage"}),
            lead_escalation=Escalation(retries=0, on_failure="report"),
        )
        async with Runtime(url, retry_backoff=(0.01, 0.05)) as rt:
            rt.add(*agents)
            _, result = await run_job(rt, h, Job(id="same", goal="saved searches"))
            outputs.append(result.model_dump())
    assert outputs[0] == outputs[1]
    assert outputs[0]["results"][1]["worker"] == "backend"


async def test_engineering_org_example_rolls_up_one_plan(
    url_for: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTBUS_MODEL", "offline")  # never a live model in tests
    monkeypatch.delenv("ENG_ORG_CHAOS", raising=False)
    app = load_app(str(EXAMPLES / "engineering_org.py"))
    async with Runtime(url_for) as rt:
        rt.add(*app.build_agents())
        async with rt.run(app.name) as run:
            plan = await app.run_main(run)
        received = await steps(rt, run.run_id, "hier.received")
    assert plan.startswith('Plan for "Saved searches with email alerts": 16 work items')
    for team_name in ("frontend", "api", "platform", "qa"):
        assert f"\n{team_name} (4 items" in plan
    assert "Status: completed" in plan
    assert sorted(r["node"] for r in received) == ["backend-lead", "eng-lead"]
