"""``ctx.ask_human``: park, list, answer, resume; timeouts, cancel, bad answers, replay.

On both transports (the memory one with its journal in memory, Redis with a key prefix
of the test's own). Worker subprocesses and the CLI are in ``test_ask_human_workers.py``.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentbus import (
    InvalidAnswer,
    QuestionClosed,
    Retention,
    Runtime,
    UnknownQuestion,
)
from agentbus.replay import replay_run
from agentbus.testing import wait_for


def _load_app() -> Any:
    """``ask_app.py``, loaded once per process (its message types register once)."""
    if "ask_app" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "ask_app", Path(__file__).with_name("ask_app.py")
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["ask_app"] = module
        spec.loader.exec_module(module)
    return sys.modules["ask_app"]


ask_app = _load_app()
Refund = ask_app.Refund


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ask.log"
    monkeypatch.setenv("ASK_LOG", str(path))
    return path


def lines(log: Path, word: str) -> list[list[str]]:
    if not log.exists():
        return []
    return [w for w in (line.split() for line in log.read_text().splitlines()) if w[0] == word]


@pytest.fixture
async def rt(url_for: str) -> AsyncIterator[Runtime]:
    runtime = Runtime(url_for, retention=Retention(wakeups=0.1), block_ms=100)
    runtime.add(ask_app.Approver(), ask_app.Auditor())
    async with runtime:
        yield runtime


async def kinds(rt: Runtime, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [r.record for r in await rt.journal.records(run_id) if r.kind == kind]


async def result_of(rt: Runtime, run_id: str, order: str) -> dict[str, Any] | None:
    for r in await rt.journal.records(run_id):
        event = r.record.get("event") or {}
        if (
            r.kind == "published"
            and event.get("type") == "askmp.Refunded"
            and (event["data"]["order"] == order)
        ):
            return dict(event["data"])
    return None


async def waiting(rt: Runtime, run_id: str) -> list[Any]:
    questions: list[Any] = []

    async def listed() -> bool:
        questions[:] = await rt.pending(run_id)
        return bool(questions)

    await wait_for(listed, timeout=10, message="the question listed as pending")
    return questions


async def test_a_parked_question_is_answered_and_the_run_completes(rt: Runtime, log: Path) -> None:
    async with rt.run("ask") as run:
        await run.publish("askmp.refunds", Refund(order="A-1", amount=480))
        (q,) = await waiting(rt, run.run_id)
        assert (q.agent, q.question_type, q.status) == ("approver", "askmp.Approval", "open")
        assert q.question == {"order": "A-1", "amount": 480.0}
        assert q.deadline is not None
        assert q.deadline - q.asked == pytest.approx(3 * 86_400)
        await rt.idle()
        # Parked: acknowledged, nothing pending anywhere, nobody holds it.
        topics = {t.topic: t for t in await rt.transport.admin.topics()}
        assert [g.pending for g in topics["askmp.refunds"].groups] == [0, 0]
        parked = await kinds(rt, run.run_id, "parked")
        assert [p["question_id"] for p in parked] == [q.question_id]
        assert [a["question_id"] for a in await kinds(rt, run.run_id, "question_asked")] == [
            q.question_id
        ]
        assert await result_of(rt, run.run_id, "A-1") is None

        answered = await run.answer(q.question_id, {"approve": True, "note": "ok"}, by="alice")
        assert (answered.status, answered.by) == ("answered", "alice")

        async def done() -> bool:
            return await result_of(rt, run.run_id, "A-1") is not None

        await wait_for(done, timeout=10, message="the run resumed")
    assert await result_of(rt, run.run_id, "A-1") == {
        "order": "A-1",
        "status": "refunded",
        "note": "ok",
    }
    assert await rt.pending() == []
    assert len(lines(log, "tool")) == 1  # the call before the question: not made again
    assert len(lines(log, "audit")) == 1  # the auditor never saw the woken event
    records = await rt.journal.records(run.run_id)
    tool_calls = [r.record for r in records if r.kind == "tool_call"]
    assert [c.get("resumed", False) for c in tool_calls] == [False, True]
    woken = [r.record for r in records if r.kind == "delivered" and r.record.get("woken")]
    assert [w["agent"] for w in woken] == ["approver"]
    answers = [r.record for r in records if r.kind == "question_answered"]
    assert [(a["answer"], a["by"]) for a in answers] == [({"approve": True, "note": "ok"}, "alice")]
    with pytest.raises(QuestionClosed, match="already answered by alice") as closed:
        await run.answer(q.question_id, {"approve": False})
    assert closed.value.status == "answered"


async def test_a_malformed_answer_is_refused_when_given(rt: Runtime) -> None:
    async with rt.run("ask") as run:
        await run.publish("askmp.refunds", Refund(order="A-2", amount=200))
        (q,) = await waiting(rt, run.run_id)
        with pytest.raises(InvalidAnswer, match="approve: Input should be a valid boolean"):
            await run.answer(q.question_id, {"approve": "perhaps"})
        with pytest.raises(InvalidAnswer, match="approve: Field required"):
            await run.answer(q.question_id, {"note": "no decision"})
        with pytest.raises(UnknownQuestion, match="has no question 'qnope'"):
            await run.answer("qnope", {"approve": True})
        (still,) = await rt.pending(run.run_id)
        assert still.status == "open"
        # a unique prefix of the id works, as for runs
        await run.answer(q.question_id[:6], {"approve": False})

        async def done() -> bool:
            return await result_of(rt, run.run_id, "A-2") is not None

        await wait_for(done, timeout=10, message="the run resumed")
    assert (await result_of(rt, run.run_id, "A-2") or {})["status"] == "refused"


async def test_a_question_past_its_deadline_resumes_with_question_timeout(
    rt: Runtime, log: Path
) -> None:
    async with rt.run("ask") as run:
        await run.publish("askmp.refunds", Refund(order="A-3", amount=300, timeout_s=0.3))
        (q,) = await waiting(rt, run.run_id)

        async def done() -> bool:
            return await result_of(rt, run.run_id, "A-3") is not None

        await wait_for(done, timeout=10, message="the run resumed after the deadline")
    # The handler caught QuestionTimeout and decided a default.
    assert (await result_of(rt, run.run_id, "A-3") or {})["status"] == "expired"
    timed_out = await kinds(rt, run.run_id, "question_timed_out")
    assert [t["question_id"] for t in timed_out] == [q.question_id]
    assert await rt.pending() == []
    with pytest.raises(QuestionClosed, match="timed out") as closed:
        await run.answer(q.question_id, {"approve": True})
    assert closed.value.status == "timed_out"
    assert len(lines(log, "tool")) == 1


async def test_cancelling_the_run_withdraws_its_questions(rt: Runtime) -> None:
    async with rt.run("ask") as run:
        await run.publish("askmp.refunds", Refund(order="A-4", amount=400))
        await run.publish("askmp.refunds", Refund(order="A-5", amount=500))
        await wait_for(
            lambda: _count(rt, run.run_id, 2), timeout=10, message="both questions pending"
        )
        questions = await rt.pending(run.run_id)
        assert await run.cancel(by="test")
    assert await rt.pending() == []
    withdrawn = await kinds(rt, run.run_id, "question_withdrawn")
    assert sorted(w["question_id"] for w in withdrawn) == sorted(q.question_id for q in questions)
    assert {w["by"] for w in withdrawn} == {"test"}
    with pytest.raises(QuestionClosed, match="withdrawn") as closed:
        await rt.answer(run.run_id, questions[0].question_id, {"approve": True})
    assert closed.value.status == "withdrawn"
    await rt.idle()
    assert await result_of(rt, run.run_id, "A-4") is None


async def _count(rt: Runtime, run_id: str, n: int) -> bool:
    return len(await rt.pending(run_id)) == n


async def test_replay_answers_the_question_from_the_recording(
    url_for: str, log: Path, backend: str, tmp_path: Path
) -> None:
    app = ask_app.app
    # The embedded journal in a file: replay reads the recording back from it.
    url = f"memory://?journal={tmp_path / 'j.sqlite3'}" if backend == "memory" else url_for
    rt = Runtime(url, retention=Retention(wakeups=0.1), block_ms=100)
    rt.add(*app.build_agents())
    async with rt:
        async with rt.run(app) as run:
            await run.publish("askmp.refunds", Refund(order="A-6", amount=600))
            (q,) = await waiting(rt, run.run_id)
            await run.answer(q.question_id, {"approve": True, "note": "fine"})

            async def done() -> bool:
                return await result_of(rt, run.run_id, "A-6") is not None

            await wait_for(done, timeout=10, message="the run resumed")
        await rt.idle()
    started = time.perf_counter()
    result = await replay_run(run.run_id, url=url, app=app)
    assert result.identical, result.divergence
    assert result.produced_events == result.recorded_events == 2
    assert time.perf_counter() - started < 10  # nobody was asked: no parking, no waiting
    async with Runtime(url) as reader:
        records = await reader.journal.records(result.run_id)
    assert not [r for r in records if r.kind == "parked"]
    answered = [r.record for r in records if r.kind == "question_answered"]
    assert [(a["answer"], a["substituted"]) for a in answered] == [
        ({"approve": True, "note": "fine"}, True)
    ]
    assert len(lines(log, "tool")) == 1  # the replay's tool call came from the recording
