"""Re-execution, fork and diff of a run with model calls (embedded store)."""

from __future__ import annotations

from pathlib import Path

from qa_app import build

from agentbus import Journal, Runtime
from agentbus.agents import OfflineModel
from agentbus.compare import diff_runs
from agentbus.replay import replay_run


async def record(url: str) -> str:
    app = build()
    async with Runtime(url, block_ms=100) as rt:
        rt.add(*app.build_agents())
        async with rt.run(
            "qa", meta={"app": str(Path(__file__).with_name("qa_app.py")) + ":app"}
        ) as run:
            await app.run_main(run)
    return run.run_id


async def events(url: str, run_id: str) -> list[dict]:
    async with Journal.open(url) as journal:
        return [e.to_dict() for e in await journal.events(run_id)]


async def test_replay_substitutes_recorded_model_calls_and_is_identical(tmp_path: Path) -> None:
    url = f"memory://?journal={tmp_path / 'j.sqlite3'}"
    run_id = await record(url)
    # A model that would answer differently proves the recorded answers were used.
    app = build(model=OfflineModel(script=["SHOULD NOT BE CALLED"] * 4))
    result = await replay_run(run_id, url=url, app=app)
    assert result.identical, result.divergence and result.divergence.describe()
    assert result.substituted_calls == 2
    assert result.live_calls == 0
    assert (
        result.recorded_events == result.produced_events == 8
    )  # study, 2x(prompt, reply, note), notes
    async with Journal.open(url) as journal:
        info = await journal.run(result.run_id)
    assert info.meta["replay_of"] == run_id
    assert info.meta["verdict"] == "identical"


async def test_changed_prompt_diverges_at_the_event_whose_handler_called_the_model(
    tmp_path: Path,
) -> None:
    url = f"memory://?journal={tmp_path / 'j.sqlite3'}"
    run_id = await record(url)
    recorded = await events(url, run_id)
    result = await replay_run(run_id, url=url, app=build(system_prompt="Be verbose."))
    assert not result.identical
    div = result.divergence
    assert div is not None
    first_prompt = next(i for i, e in enumerate(recorded) if e["type"] == "agents.Prompt")
    assert div.position == first_prompt
    assert div.reason == "assistant's model call 'agentbus-offline' sent a different request"
    assert div.expected is not None
    assert div.actual is not None
    assert div.expected["messages"][0]["content"] == "Be brief."
    assert div.actual["messages"][0]["content"] == "Be verbose."


async def test_fork_keeps_events_before_n_and_goes_live_after(tmp_path: Path) -> None:
    url = f"memory://?journal={tmp_path / 'j.sqlite3'}"
    run_id = await record(url)
    recorded = await events(url, run_id)
    prompts = [i for i, e in enumerate(recorded) if e["type"] == "agents.Prompt"]
    fork_at = prompts[1]  # the second question goes to the (changed) live model
    result = await replay_run(
        run_id,
        url=url,
        app=build(model=OfflineModel(script=["Eclipses: the moon's shadow."])),
        fork_at=fork_at,
    )
    assert result.substituted_calls == 1
    assert result.live_calls == 1
    forked = await events(url, result.run_id)
    async with Journal.open(url) as journal:
        info = await journal.run(result.run_id)
    assert info.meta["mode"] == "fork"
    assert info.meta["fork_at"] == fork_at
    assert info.meta["replay_of"] == run_id

    diff = diff_runs(run_id, recorded, result.run_id, forked)
    assert not diff.identical
    assert diff.first is not None
    assert diff.first.position > fork_at  # everything before the fork point is shared
    assert diff.first.actual is not None
    assert diff.first.actual["data"]["text"] == "Eclipses: the moon's shadow."
    changed_types = sorted(e["type"] for e in diff.only_in_b)
    assert changed_types == ["agents.Reply", "qa.Note", "qa.Notes"]
    assert diff.shared == len(recorded) - 3


async def test_runs_count_model_tokens(tmp_path: Path) -> None:
    url = f"memory://?journal={tmp_path / 'j.sqlite3'}"
    run_id = await record(url)
    async with Journal.open(url) as journal:
        info = await journal.run(run_id)
        records = await journal.records(run_id)
    spent = sum(
        r.record["response"]["usage"]["input_tokens"]
        + r.record["response"]["usage"]["output_tokens"]
        for r in records
        if r.kind == "model_call"
    )
    assert spent > 0
    assert info.tokens == spent


async def test_a_run_started_from_python_with_its_app_is_replayable(tmp_path: Path) -> None:
    """``rt.run(app)`` records how the app is loaded, so replay needs no ``app=``."""
    import qa_app

    url = f"memory://?journal={tmp_path / 'j.sqlite3'}"
    async with Runtime(url, block_ms=100) as rt:
        rt.add(*qa_app.app.build_agents())
        async with rt.run(qa_app.app) as run:
            await qa_app.app.run_main(run)
    assert run.name == "qa"
    assert run.meta["app"] == "qa_app:app"
    result = await replay_run(run.run_id, url=url)  # no app=: found from the run's meta
    assert result.identical, result.divergence and result.divergence.describe()
