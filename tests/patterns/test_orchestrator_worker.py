"""Orchestrator-worker on both transports: happy path, crashes, timeouts, edge endings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agentbus import Context, MemoryTransport, RemoteError, Runtime, UsageError, load_app
from agentbus.agents.model import ChatMessage, ChatResponse
from agentbus.agents.offline import OfflineModel
from agentbus.patterns.orchestrator_worker import (
    Job,
    JobResult,
    ModelAggregator,
    ModelPlanner,
    Orchestrator,
    Summary,
    Task,
    TaskFailure,
    TaskResult,
    Worker,
    worker,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JOBS = "ow.test.jobs"
WORK = "ow.test.tasks"

MakeRuntime = Callable[..., Runtime]


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


def split_words(job: Job) -> list[Task]:
    """One task per word of the goal; words starting with the same letter share a key."""
    return [
        Task(title=w, text=w, key=w[0] if job.data.get("keyed") else None) for w in job.goal.split()
    ]


def upper(task: Task, ctx: Context) -> str:
    return task.text.upper()


def orchestrator(**options: Any) -> Orchestrator:
    settings: dict[str, Any] = {
        "name": "lead",
        "topic": JOBS,
        "work_topic": WORK,
        "plan": split_words,
        "task_timeout": 5.0,
    }
    return Orchestrator(**{**settings, **options})


async def steps(rt: Runtime, run_id: str, name: str) -> list[dict[str, Any]]:
    await rt.idle()
    return [
        r.record
        for r in await rt.journal.records(run_id)
        if r.kind == "step" and r.record.get("step") == name
    ]


async def run_job(rt: Runtime, job: Job, timeout: float = 20.0) -> tuple[str, JobResult]:
    async with rt.run("ow-test") as run:
        result = await run.request(JOBS, job, expect=JobResult, timeout=timeout)
    return run.run_id, result


async def test_happy_path_orders_results_by_task_and_journals_steps(
    make_runtime: MakeRuntime,
) -> None:
    rt = make_runtime()
    rt.add(orchestrator(max_in_flight=2), worker(upper, topic=WORK, name="upper"))
    async with rt:
        run_id, result = await run_job(rt, Job(id="j1", goal="alpha beta gamma delta epsilon"))
        assert result.status == "completed"
        assert [r.text for r in result.results] == ["ALPHA", "BETA", "GAMMA", "DELTA", "EPSILON"]
        assert [r.index for r in result.results] == [0, 1, 2, 3, 4]
        assert {r.worker for r in result.results} == {"upper"}
        assert result.text.startswith("## alpha\nALPHA\n\n## beta\nBETA")
        assert result.produced_by == "join_results"
        planned = await steps(rt, run_id, "ow.planned")
        assert [t["title"] for t in planned[0]["tasks"]] == [
            "alpha",
            "beta",
            "gamma",
            "delta",
            "epsilon",
        ]
        assert len(await steps(rt, run_id, "ow.dispatched")) == 5
        assert len(await steps(rt, run_id, "ow.task_done")) == 5
        progress = await steps(rt, run_id, "ow.progress")
        assert max(p["finished"] for p in progress) == 5
        assert len(await steps(rt, run_id, "ow.aggregated")) == 1


async def test_max_in_flight_bounds_concurrent_tasks(make_runtime: MakeRuntime) -> None:
    busy = 0
    peak = 0

    async def slow(task: Task, ctx: Context) -> str:
        nonlocal busy, peak
        busy += 1
        peak = max(peak, busy)
        await asyncio.sleep(0.05)
        busy -= 1
        return task.text

    rt = make_runtime()
    rt.add(orchestrator(max_in_flight=2), worker(slow, topic=WORK, name="slow"))
    async with rt:
        _, result = await run_job(rt, Job(id="j2", goal="a b c d e f"))
    assert [r.text for r in result.results] == list("abcdef")
    assert peak == 2


async def test_tasks_with_one_key_run_one_at_a_time_in_plan_order(
    make_runtime: MakeRuntime,
) -> None:
    order: list[str] = []
    running: set[str] = set()
    overlap: list[str] = []

    async def record(task: Task, ctx: Context) -> str:
        assert task.key is not None
        if task.key in running:
            overlap.append(task.title)
        running.add(task.key)
        order.append(task.title)
        await asyncio.sleep(0.02)
        running.discard(task.key)
        return task.title

    rt = make_runtime()
    rt.add(orchestrator(max_in_flight=8), worker(record, topic=WORK, name="rec"))
    async with rt:
        run_id, result = await run_job(
            rt, Job(id="j3", goal="apple bee avocado banana cherry apricot", data={"keyed": True})
        )
        assert result.status == "completed"
        assert not overlap
        assert [t for t in order if t.startswith("a")] == ["apple", "avocado", "apricot"]
        assert [t for t in order if t.startswith("b")] == ["bee", "banana"]
        dispatched = await steps(rt, run_id, "ow.dispatched")
        assert {d["key"] for d in dispatched} == {"a", "b", "c"}


async def test_worker_error_is_redispatched_and_succeeds(make_runtime: MakeRuntime) -> None:
    def flaky(task: Task, ctx: Context) -> str:
        if task.title == "beta" and task.attempt == 1:
            raise RuntimeError("disk full")
        return task.text.upper()

    rt = make_runtime()
    rt.add(orchestrator(), worker(flaky, topic=WORK, name="flaky"))
    async with rt:
        run_id, result = await run_job(rt, Job(id="j4", goal="alpha beta gamma"))
        assert result.status == "completed"
        assert [r.text for r in result.results] == ["ALPHA", "BETA", "GAMMA"]
        assert [r.attempt for r in result.results] == [1, 2, 1]
        errors = await steps(rt, run_id, "ow.task_error")
        assert len(errors) == 1
        assert errors[0]["index"] == 1
        assert "RuntimeError" in errors[0]["error"]
        assert "disk full" in errors[0]["error"]
        assert errors[0]["next"] == "re-dispatch"


async def test_hung_worker_times_out_and_the_task_is_redispatched(
    make_runtime: MakeRuntime,
) -> None:
    release = asyncio.Event()

    async def hangs_once(task: Task, ctx: Context) -> str:
        if task.title == "gamma" and task.attempt == 1:
            await release.wait()  # never set while the job runs: past task_timeout
        return task.text

    rt = make_runtime()
    rt.add(orchestrator(task_timeout=0.5), worker(hangs_once, topic=WORK, name="hang"))
    async with rt:
        run_id, result = await run_job(rt, Job(id="j5", goal="alpha beta gamma"))
        release.set()
        assert result.status == "completed"
        assert [r.attempt for r in result.results] == [1, 1, 2]
        errors = await steps(rt, run_id, "ow.task_error")
        assert [(e["index"], e["attempt"]) for e in errors] == [(2, 1)]
        assert "RequestTimeout" in errors[0]["error"]


async def test_crashed_worker_process_loses_its_task_to_a_live_replica(
    make_runtime: MakeRuntime,
) -> None:
    taken = asyncio.Event()
    release = asyncio.Event()

    async def stalls(task: Task, ctx: Context) -> str:
        taken.set()
        await release.wait()
        return "never"

    async def good(task: Task, ctx: Context) -> str:
        return task.text.upper()

    lead = make_runtime()
    lead.add(orchestrator(task_timeout=1.0))
    doomed = make_runtime(grace_period=0.0)
    doomed.add(worker(stalls, topic=WORK, name="pool"))
    async with lead:
        await doomed.start()
        async with lead.run("crash") as run:
            pending = asyncio.create_task(
                run.request(JOBS, Job(id="j6", goal="solo"), expect=JobResult, timeout=20)
            )
            await asyncio.wait_for(taken.wait(), 10)
            await doomed.aclose()  # the worker process dies with the task in hand
            survivor = make_runtime()
            survivor.add(worker(good, topic=WORK, name="pool"))
            await survivor.start()
            result = await pending
        release.set()
        assert result.status == "completed"
        assert result.results[0].text == "SOLO"
        assert result.results[0].attempt == 2
        errors = await steps(lead, run.run_id, "ow.task_error")
        assert "RequestTimeout" in errors[0]["error"]


async def test_fail_fast_fails_the_job_naming_the_task(make_runtime: MakeRuntime) -> None:
    def broken(task: Task, ctx: Context) -> str:
        if task.title == "beta":
            raise ValueError("cannot parse beta")
        return task.text

    rt = make_runtime()
    rt.add(orchestrator(max_attempts=2), worker(broken, topic=WORK, name="broken"))
    async with rt:
        with pytest.raises(RemoteError) as info:
            await run_job(rt, Job(id="j7", goal="alpha beta gamma"))
    assert info.value.error_type == "JobFailed"
    assert "job 'j7' failed: task 1 ('beta') failed after 2 attempts" in info.value.message
    assert "cannot parse beta" in info.value.message


async def test_best_effort_reports_failures_and_aggregates_the_rest(
    make_runtime: MakeRuntime,
) -> None:
    def broken(task: Task, ctx: Context) -> str:
        if task.title == "beta":
            raise ValueError("cannot parse beta")
        return task.text.upper()

    seen: list[tuple[list[int], list[int]]] = []

    def aggregate(job: Job, results: list[TaskResult], failures: list[TaskFailure]) -> Summary:
        seen.append(([r.index for r in results], [f.index for f in failures]))
        return Summary(text=" ".join(r.text for r in results), data={"n": len(results)})

    rt = make_runtime()
    rt.add(
        orchestrator(max_attempts=2, failure_policy="best_effort", aggregate=aggregate),
        worker(broken, topic=WORK, name="broken"),
    )
    async with rt:
        run_id, result = await run_job(rt, Job(id="j8", goal="alpha beta gamma"))
        assert result.status == "partial"
        assert result.text == "ALPHA GAMMA"
        assert result.data == {"n": 2}
        assert seen == [([0, 2], [1])]
        [failure] = result.failures
        assert (failure.index, failure.title, failure.attempts) == (1, "beta", 2)
        assert "cannot parse beta" in failure.error
        assert len(await steps(rt, run_id, "ow.task_failed")) == 1


async def test_best_effort_with_every_task_failing_fails_the_job(
    make_runtime: MakeRuntime,
) -> None:
    def broken(task: Task, ctx: Context) -> str:
        raise ValueError(f"no {task.title}")

    rt = make_runtime()
    rt.add(
        orchestrator(max_attempts=1, failure_policy="best_effort"),
        worker(broken, topic=WORK, name="broken"),
    )
    async with rt:
        with pytest.raises(RemoteError, match="every task failed") as info:
            await run_job(rt, Job(id="j9", goal="alpha beta"))
    assert "task 0 ('alpha')" in info.value.message
    assert "task 1 ('beta')" in info.value.message


@pytest.mark.parametrize(
    ("goal", "max_tasks", "reason"),
    [("", 10, "the planner returned no tasks"), ("a b c", 2, "returned 3 tasks; max_tasks is 2")],
)
async def test_plan_with_no_or_too_many_tasks_fails_the_job(
    make_runtime: MakeRuntime, goal: str, max_tasks: int, reason: str
) -> None:
    rt = make_runtime()
    rt.add(orchestrator(max_tasks=max_tasks), worker(upper, topic=WORK, name="upper"))
    async with rt:
        with pytest.raises(RemoteError, match=reason):
            await run_job(rt, Job(id="j10", goal=goal))


async def test_model_planner_and_aggregator_call_the_model_through_the_journal(
    make_runtime: MakeRuntime,
) -> None:
    plan = '{"tasks": [{"title": "one", "text": "first"}, {"title": "two", "text": "second"}]}'
    model = OfflineModel(script=[plan])

    class Echo(Worker, name="echo"):
        async def work(self, task: Task, ctx: Context) -> TaskResult:
            return TaskResult(text=f"did {task.text}", data={"len": len(task.text)})

    rt = make_runtime()
    rt.add(
        orchestrator(plan=ModelPlanner(model), aggregate=ModelAggregator(model)),
        Echo(topic=WORK),
    )
    async with rt:
        run_id, result = await run_job(rt, Job(id="j11", goal="do two things"))
        assert [r.text for r in result.results] == ["did first", "did second"]
        assert result.results[1].data == {"len": 6}
        assert result.produced_by == "model:agentbus-offline (offline)"
        assert result.text.startswith("[offline model] ")
        await rt.idle()
        calls = [r.record for r in await rt.journal.records(run_id) if r.kind == "model_call"]
        assert len(calls) == 2
        assert calls[0]["request"]["response_schema_name"] == "plan"
        assert "did second" in calls[1]["request"]["messages"][1]["content"]


async def test_model_planner_rejects_an_invalid_plan(make_runtime: MakeRuntime) -> None:
    bad = ChatResponse(
        message=ChatMessage.assistant('{"tasks": []}'), model="m", provider="offline", offline=True
    )
    rt = make_runtime(max_attempts=1)
    rt.add(
        orchestrator(plan=ModelPlanner(OfflineModel(script=[bad]))),
        worker(upper, topic=WORK, name="upper"),
    )
    async with rt:
        with pytest.raises(RemoteError, match="ModelResponseError"):
            await run_job(rt, Job(id="j12", goal="anything"))


def test_configuration_mistakes_raise_usage_errors() -> None:
    with pytest.raises(UsageError, match="must differ"):
        orchestrator(work_topic=JOBS)
    with pytest.raises(UsageError, match="task_timeout must be positive"):
        orchestrator(task_timeout=0)
    with pytest.raises(UsageError, match="max_in_flight must be at least 1"):
        orchestrator(max_in_flight=0)
    with pytest.raises(UsageError, match="failure_policy must be one of"):
        orchestrator(failure_policy="sometimes")
    with pytest.raises(UsageError, match="plan must be a function"):
        orchestrator(plan="split")
    with pytest.raises(UsageError, match="topic names"):
        orchestrator(topic="has space")
    with pytest.raises(UsageError, match="topic names"):
        worker(upper, topic="", name="w")


async def test_memory_and_redis_give_identical_results(redis_url: str, redis_prefix: str) -> None:
    def flaky(task: Task, ctx: Context) -> TaskResult:
        if task.index == 1 and task.attempt == 1:
            raise RuntimeError("transient")
        return TaskResult(text=task.text[::-1], data={"letters": sorted(set(task.text))})

    job = Job(id="same", goal="redis streams replay journal", data={"keyed": True})
    results = []
    for url in ("memory://?journal=", f"{redis_url}?prefix={redis_prefix}"):
        async with Runtime(url, retry_backoff=(0.01, 0.05)) as rt:
            rt.add(
                orchestrator(failure_policy="best_effort"),
                worker(flaky, topic=WORK, name="flaky"),
            )
            _, result = await run_job(rt, job)
            results.append(result.model_dump())
    assert results[0] == results[1]
    assert results[0]["results"][1]["attempt"] == 2


async def test_research_team_example_answers_from_the_corpus(
    url_for: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTBUS_MODEL", "offline")  # never a live model in tests
    monkeypatch.delenv("RESEARCH_QUESTION", raising=False)
    app = load_app(str(EXAMPLES / "research_team.py"))
    async with Runtime(url_for) as rt:
        rt.add(*app.build_agents())
        async with rt.run(app.name) as run:
            report = await app.run_main(run)
        await rt.idle()
        tools = [r for r in await rt.journal.records(run.run_id) if r.kind == "tool_call"]
        planned = await steps(rt, run.run_id, "ow.planned")
    assert "Why are honeybee colonies declining?" in report
    assert "[varroa-mites.md]" in report
    assert "Sources: " in report
    assert "no language model" in report
    assert len(planned[0]["tasks"]) >= 3
    assert {t.record["name"] for t in tools} == {"search_corpus"}


class Review(BaseModel):
    approved: bool
    findings: list[str]


async def test_structured_output_is_validated_against_the_workers_output_model(
    make_runtime: MakeRuntime,
) -> None:
    def review(task: Task, ctx: Context) -> dict[str, Any]:
        if task.title == "beta":
            return {"approved": True, "issues": ["typo"]}  # misspelt: no "findings"
        return {"approved": True, "findings": [f"{task.title} ok"]}

    def typed(task: Task, ctx: Context) -> Review:
        return Review(approved=False, findings=[task.title])

    rt = make_runtime()
    rt.add(
        orchestrator(max_attempts=1),
        worker(review, topic=WORK, name="reviewer", output=Review),
    )
    async with rt:
        with pytest.raises(RemoteError) as info:
            await run_job(rt, Job(id="r1", goal="alpha beta"))
    assert "worker 'reviewer' returned data that is not a valid Review" in info.value.message
    assert "findings: Field required" in info.value.message

    rt = make_runtime()
    rt.add(orchestrator(), worker(typed, topic=WORK, name="typed", output=Review))
    async with rt:
        _, result = await run_job(rt, Job(id="r2", goal="alpha beta"))
    reviews = [r.data_as(Review) for r in result.results]
    assert reviews == [
        Review(approved=False, findings=["alpha"]),
        Review(approved=False, findings=["beta"]),
    ]


def test_a_worker_returning_something_else_names_what_it_may_return() -> None:
    from agentbus.patterns.orchestrator_worker._worker import as_result

    with pytest.raises(TypeError, match=r"returned 'int'; a worker returns a TaskResult"):
        as_result(Task(title="t"), 42, "w")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="output must be a pydantic model class"):
        worker(upper, topic=WORK, name="w", output=dict)  # type: ignore[arg-type]
