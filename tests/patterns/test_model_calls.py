"""Every model call — an LLM agent's, a model planner's, a model chooser's — is journaled by
``agents.call_model`` in one request shape."""

from __future__ import annotations

from typing import Any

from agentbus import Context, Runtime
from agentbus.agents import LLMAgent, OfflineModel, Prompt, Reply
from agentbus.patterns.blackboard import (
    BlackboardController,
    BoardOutcome,
    BoardState,
    Draft,
    KnowledgeSource,
    SolveBoard,
    Verdict,
    model_chooser,
)
from agentbus.patterns.orchestrator_worker import Job, JobResult, ModelPlanner, Orchestrator, worker


class Writer(KnowledgeSource, name="writer"):
    board = "calls"

    async def can_contribute(self, board: BoardState, ctx: Context) -> Verdict:
        return not board.has("note")

    async def contribute(self, board: BoardState, ctx: Context) -> Draft:
        return Draft(kind="note", data={"text": "done"})


async def _model_calls() -> list[dict[str, Any]]:
    model = OfflineModel()
    agents = [
        LLMAgent(name="helper", model=model, topic="calls.prompts"),
        Orchestrator(topic="calls.jobs", work_topic="calls.tasks", plan=ModelPlanner(model)),
        worker(lambda task, ctx: task.title, topic="calls.tasks", name="doer"),
        BlackboardController(
            "calls", ["writer"], lambda b: b.has("note"), chooser=model_chooser(model)
        ),
        Writer(),
    ]
    async with Runtime("memory://?journal=", block_ms=50) as rt:
        rt.add(*agents)
        async with rt.run("calls") as run:
            await run.request("calls.prompts", Prompt(text="hi"), expect=Reply, timeout=20)
            await run.request("calls.jobs", Job(id="j", goal="g"), expect=JobResult, timeout=20)
            controller = agents[3]
            assert isinstance(controller, BlackboardController)
            await run.request(
                controller.topic, SolveBoard(problem={}), expect=BoardOutcome, timeout=20
            )
        records = [r.record for r in await rt.journal.records(run.run_id)]
    return [r for r in records if r["kind"] == "model_call"]


async def test_every_model_call_journals_one_request_shape() -> None:
    calls = await _model_calls()
    by_agent = {c["agent"]: c["request"] for c in calls}
    assert set(by_agent) == {"helper", "orchestrator", "blackboard-calls"}
    for agent, request in by_agent.items():
        # The model actually asked and who serves it; no field left at None.
        assert request["model"] == "agentbus-offline", agent
        assert request["provider"] == "offline", agent
        assert None not in request.values(), agent
        assert "temperature" not in request, agent
    assert by_agent["orchestrator"]["response_schema_name"] == "plan"
    assert by_agent["blackboard-calls"]["response_schema_name"] == "choice"
