"""An incident war-room on a blackboard: analysts post findings until a root cause and fix stand.

The incident (INC-2041, checkout errors) and its evidence ship in ``examples/data/incident``:
logs, per-minute metrics and the deploy history. Knowledge sources read them through tools
(called via ``ctx.invoke``, so they are journaled and replayable):

* log-analyst, metrics-analyst, deploy-analyst post findings;
* hypothesizer proposes the likeliest unrefuted change as the root cause once the evidence is in;
* verifier confirms or rejects a proposed cause against the evidence;
* fix-planner proposes a remedy for a confirmed cause.

The board ends when a confirmed root cause and a fix are on it. Plain-Python sources, no model
needed; with a real model configured (``OPENAI_API_KEY`` or ``AGENTBUS_MODEL_URL``), the
controller asks it which source goes next and the hypothesizer asks it for a rationale.

    agentbus run examples/incident_war_room.py
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agentbus import App, Context, Message, Run
from agentbus.agents import ChatMessage, ChatModel, ChatRequest, ChatResponse, model_from_env
from agentbus.patterns.blackboard import (
    BlackboardController,
    BoardOutcome,
    BoardState,
    Chooser,
    Draft,
    KnowledgeSource,
    SolveBoard,
    Verdict,
    board_topics,
    model_chooser,
)

BOARD = "incident"
DATA = Path(__file__).resolve().parent / "data" / "incident"


# -- tools over the incident data set ---------------------------------------------------------------
def _at(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


def search_logs(since: str, until: str, min_level: str = "WARN") -> dict[str, Any]:
    """Log lines at ``min_level`` or above, grouped by service and message signature."""
    levels = ["DEBUG", "INFO", "WARN", "ERROR"]
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for line in (DATA / "logs.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if levels.index(rec["level"]) < levels.index(min_level):
            continue
        if not _at(since) <= _at(rec["ts"]) <= _at(until):
            continue
        signature = re.sub(r"\d+", "N", rec["message"])
        group = groups.setdefault(
            (rec["service"], rec["level"], signature),
            {"service": rec["service"], "level": rec["level"], "signature": signature,
             "count": 0, "first_seen": rec["ts"], "example": rec["message"]},
        )  # fmt: skip
        group["count"] += 1
        group["last_seen"] = rec["ts"]
    found = sorted(groups.values(), key=lambda g: (g["first_seen"], g["service"]))
    return {"groups": found, "total": sum(g["count"] for g in found)}


def query_metrics(since: str, until: str) -> dict[str, Any]:
    """Each series' baseline (median of its first 5 samples), peak and anomaly onset.

    The onset is the first sample at least 3x above or below the baseline.
    """
    series = json.loads((DATA / "metrics.json").read_text())["series"]
    out = {}
    for name, points in sorted(series.items()):
        window = [(ts, v) for ts, v in points if _at(since) <= _at(ts) <= _at(until)]
        baseline = sorted(v for _, v in window[:5])[2]
        onset = next((ts for ts, v in window if v >= 3 * baseline or v <= baseline / 3), None)
        out[name] = {
            "baseline": baseline,
            "peak": max(v for _, v in window),
            "last": window[-1][1],
            "onset": onset,
        }
    return {"series": out}


def list_deploys(since: str, until: str) -> dict[str, Any]:
    """Deploys and config changes between ``since`` and ``until``, oldest first."""
    deploys = json.loads((DATA / "deploys.json").read_text())
    return {"deploys": [d for d in deploys if _at(since) <= _at(d["at"]) <= _at(until)]}


TOOLS: dict[str, Callable[..., dict[str, Any]]] = {
    "search_logs": search_logs,
    "query_metrics": query_metrics,
    "list_deploys": list_deploys,
}


async def use_tool(ctx: Context, name: str, **args: Any) -> dict[str, Any]:
    """Call a data-set tool through the journaled seam (replay substitutes the result)."""

    async def call() -> dict[str, Any]:
        return TOOLS[name](**args)

    return await ctx.invoke("tool", name, args, call)


def _finding(board: BoardState, source: str) -> dict[str, Any] | None:
    for entry in board.items("finding"):
        if entry.data.get("source") == source:
            return entry.data
    return None


def _window(board: BoardState) -> dict[str, str]:
    problem = board.latest("problem")
    return dict(problem.data["window"]) if problem else {}


# -- knowledge sources ------------------------------------------------------------------------------
class LogAnalyst(KnowledgeSource, name="log-analyst"):
    """Finds the error signatures and the service where errors started first."""

    board = BOARD
    priority = 30

    async def can_contribute(self, board: BoardState, ctx: Context) -> Verdict:
        return _finding(board, "logs") is None, "no log finding yet"

    async def contribute(self, board: BoardState, ctx: Context) -> Draft:
        logs = await use_tool(ctx, "search_logs", **_window(board), min_level="ERROR")
        first = logs["groups"][0]
        services = sorted({g["service"] for g in logs["groups"]})
        return Draft(kind="finding", key="logs", data={
            "source": "logs",
            "origin_service": first["service"],
            "first_error": first["first_seen"],
            "signature": first["signature"],
            "services_with_errors": services,
            "summary": f"{logs['total']} errors; first in {first['service']} at "
                       f"{first['first_seen'][11:19]}: {first['example']}",
        })  # fmt: skip


class MetricsAnalyst(KnowledgeSource, name="metrics-analyst"):
    """Dates the user-visible symptom and lists the other anomalies."""

    board = BOARD
    priority = 30

    async def can_contribute(self, board: BoardState, ctx: Context) -> Verdict:
        return _finding(board, "metrics") is None, "no metrics finding yet"

    async def contribute(self, board: BoardState, ctx: Context) -> Draft:
        problem = board.latest("problem")
        symptom_service = problem.data["service"] if problem else ""
        series = (await use_tool(ctx, "query_metrics", **_window(board)))["series"]
        anomalies = {n: s["onset"] for n, s in series.items() if s["onset"]}
        symptoms = [t for n, t in anomalies.items() if n.startswith(symptom_service + ".")]
        onset = min(symptoms) if symptoms else min(anomalies.values())
        saturated = [
            n.removesuffix("_in_use")
            for n, s in series.items()
            if n.endswith("_in_use") and s["last"] >= series[n.removesuffix("_in_use") + "_max"]["last"]
        ]  # fmt: skip
        return Draft(kind="finding", key="metrics", data={
            "source": "metrics",
            "symptom_onset": onset,
            "anomalies": anomalies,
            "saturated": saturated,
            "summary": f"{symptom_service} degraded from {onset[11:16]}; anomalies: "
                       + ", ".join(f"{n} at {t[11:16]}" for n, t in sorted(anomalies.items(), key=lambda x: x[1]))
                       + (f"; saturated: {', '.join(saturated)}" if saturated else ""),
        })  # fmt: skip


class DeployAnalyst(KnowledgeSource, name="deploy-analyst"):
    """Lists the changes shipped in the hour before the symptom, nearest first."""

    board = BOARD
    priority = 20

    async def can_contribute(self, board: BoardState, ctx: Context) -> Verdict:
        if _finding(board, "deploys") is not None:
            return False, "deploys already listed"
        return _finding(board, "metrics") is not None, "needs the symptom onset"

    async def contribute(self, board: BoardState, ctx: Context) -> Draft:
        onset = _at((_finding(board, "metrics") or {})["symptom_onset"])
        since = (onset - timedelta(hours=1)).isoformat()
        deploys = (await use_tool(ctx, "list_deploys", since=since, until=onset.isoformat()))[
            "deploys"
        ]
        suspects = sorted(deploys, key=lambda d: onset - _at(d["at"]))
        return Draft(kind="finding", key="deploys", data={
            "source": "deploys",
            "suspects": suspects,
            "summary": f"{len(suspects)} changes in the hour before the symptom: "
                       + ", ".join(f"{d['id']} {d['service']} {d['version']} at {d['at'][11:16]}" for d in suspects),
        })  # fmt: skip


class Hypothesizer(KnowledgeSource, name="hypothesizer"):
    """Proposes the nearest unrefuted change as the root cause, once all evidence is in."""

    board = BOARD
    priority = 10

    def __init__(self, model: ChatModel | None = None) -> None:
        super().__init__()
        self.model = model

    def _next(self, board: BoardState) -> dict[str, Any] | None:
        tried = {h.key for h in board.items("hypothesis")}
        suspects = (_finding(board, "deploys") or {}).get("suspects", [])
        return next((d for d in suspects if d["id"] not in tried), None)

    async def can_contribute(self, board: BoardState, ctx: Context) -> Verdict:
        if not all(_finding(board, s) for s in ("logs", "metrics", "deploys")):
            return False, "waiting for logs, metrics and deploy findings"
        if board.has("root_cause", status="confirmed") or board.has(
            "hypothesis", status="proposed"
        ):
            return False, "a cause is confirmed or under review"
        return self._next(board) is not None, "an untried suspect remains"

    async def contribute(self, board: BoardState, ctx: Context) -> Draft | None:
        suspect = self._next(board)
        if suspect is None:
            return None
        data = {
            "status": "proposed",
            "deploy": suspect,
            "summary": f"{suspect['id']} ({suspect['service']} {suspect['version']}) is the "
                       "most recent unrefuted change before the symptom",
        }  # fmt: skip
        if self.model is not None:
            data["model_rationale"] = await self._rationale(board, suspect, ctx)
        return Draft(kind="hypothesis", key=suspect["id"], data=data)

    async def _rationale(self, board: BoardState, suspect: dict[str, Any], ctx: Context) -> str:
        assert self.model is not None
        model = self.model
        evidence = "\n".join(str(e.data.get("summary", "")) for e in board.items("finding"))
        request = ChatRequest(messages=[
            ChatMessage.system("You are an SRE. Answer in one sentence."),
            ChatMessage.user(f"Evidence:\n{evidence}\n\nHow could this change cause it? {suspect}"),
        ])  # fmt: skip

        async def call() -> dict[str, Any]:
            return (await model.complete(request)).model_dump(mode="json")

        raw = await ctx.invoke("model", model.name, request.model_dump(mode="json"), call)
        return ChatResponse.model_validate(raw).text


class Verifier(KnowledgeSource, name="verifier"):
    """Checks a proposed cause against the evidence: place, time and mechanism."""

    board = BOARD
    priority = 15

    async def can_contribute(self, board: BoardState, ctx: Context) -> Verdict:
        return board.has("hypothesis", status="proposed"), "a hypothesis awaits review"

    async def contribute(self, board: BoardState, ctx: Context) -> list[Draft]:
        hyp = next(h for h in board.items("hypothesis") if h.data["status"] == "proposed")
        deploy = hyp.data["deploy"]
        logs = _finding(board, "logs") or {}
        metrics = _finding(board, "metrics") or {}
        signature_words = set(re.findall(r"[a-z]+", logs.get("signature", "").lower()))
        change_words = set(re.findall(r"[a-z]+", " ".join(deploy["changes"]).lower()))
        checks = {
            "errors start in the changed service": logs.get("origin_service") == deploy["service"],
            "change precedes the symptom": deploy["at"] <= metrics.get("symptom_onset", ""),
            "change touches what fails": bool(signature_words & change_words - {"a", "the", "for"}),
            "changed service shows saturation": any(
                s.startswith(deploy["service"]) for s in metrics.get("saturated", [])
            ),
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            why = "rejected: " + "; ".join(f"not {name}" for name in failed)
            summary = f"{deploy['id']} {why}"
            return [
                Draft(
                    kind="hypothesis",
                    key=hyp.key,
                    data={**hyp.data, "status": "rejected", "why": why, "summary": summary},
                )
            ]
        shared = sorted(signature_words & change_words - {"a", "the", "for"})
        return [
            Draft(kind="hypothesis", key=hyp.key, data={
                **hyp.data, "status": "confirmed", "summary": f"{deploy['id']} confirmed: all {len(checks)} checks hold",
            }),
            Draft(kind="root_cause", key="root_cause", data={
                "status": "confirmed",
                "deploy": deploy,
                "evidence": list(checks),
                "summary": f"{deploy['id']}: {deploy['service']} {deploy['version']} — "
                           f"{'; '.join(deploy['changes'])} (matches {', '.join(shared)} in the errors)",
            }),
        ]  # fmt: skip


class FixPlanner(KnowledgeSource, name="fix-planner"):
    """Proposes a remedy for a confirmed cause: roll back, then correct the change."""

    board = BOARD
    priority = 5

    async def can_contribute(self, board: BoardState, ctx: Context) -> Verdict:
        if board.latest("fix") is not None:
            return False, "a fix is on the board"
        return board.has("root_cause", status="confirmed"), "a confirmed cause needs a fix"

    async def contribute(self, board: BoardState, ctx: Context) -> Draft:
        cause = board.latest("root_cause")
        assert cause is not None
        deploy = cause.data["deploy"]
        window = _window(board)
        history = (
            await use_tool(ctx, "list_deploys", since=window["since"], until=window["until"])
        )["deploys"]
        later = [d for d in history if d["service"] == deploy["service"] and d["at"] > deploy["at"]]
        return Draft(kind="fix", key="fix", data={
            "action": f"roll {deploy['service']} back from {deploy['version']} to {deploy['previous_version']}",
            "follow_up": f"before re-deploying {deploy['version']}, correct its change: {deploy['changes'][-1]}",
            "verify": "checkout-api error rate back under 1% and db pool in_use below max_size",
            "safe": not later,
            "summary": f"rollback {deploy['service']} to {deploy['previous_version']}",
        })  # fmt: skip


# -- the app ----------------------------------------------------------------------------------------
class WarRoomReport(Message, type="incident.WarRoomReport"):
    incident: str
    ending: str
    reason: str
    rounds: int
    root_cause: str | None
    fix: str | None
    rejected: list[str]
    timeline: list[str]


def solved(board: BoardState) -> bool:
    """The goal: a confirmed root cause and a fix are on the board."""
    return board.has("root_cause", status="confirmed") and board.latest("fix") is not None


SOURCES: list[type[KnowledgeSource]] = [
    LogAnalyst,
    MetricsAnalyst,
    DeployAnalyst,
    Hypothesizer,
    Verifier,
    FixPlanner,
]


def _real_model() -> ChatModel | None:
    model = model_from_env()
    return None if model.provider == "offline" else model


def make_controller() -> BlackboardController:
    model = _real_model()
    chooser: Chooser | None = model_chooser(model) if model is not None else None
    names = [s.agent_name for s in SOURCES]
    return BlackboardController(BOARD, names, solved, max_rounds=12, chooser=chooser)


app = App(
    "incident-war-room",
    [make_controller, LogAnalyst, MetricsAnalyst, DeployAnalyst,
     lambda: Hypothesizer(_real_model()), Verifier, FixPlanner],
)  # fmt: skip


@app.main
async def main(run: Run) -> WarRoomReport:
    incident = json.loads((DATA / "incident.json").read_text())
    outcome = await run.request(
        board_topics(BOARD)["control"],
        SolveBoard(problem=incident),
        expect=BoardOutcome,
        timeout=120,
    )
    board = outcome.state()
    cause, fix = board.latest("root_cause"), board.latest("fix")
    return WarRoomReport(
        incident=f"{incident['id']}: {incident['title']}",
        ending=outcome.ending,
        reason=outcome.reason,
        rounds=outcome.rounds,
        root_cause=cause.data["summary"] if cause else None,
        fix=f"{fix.data['action']}; then {fix.data['follow_up']}" if fix else None,
        rejected=[
            f"{h.key}: {h.data['why']}" for h in board.items("hypothesis") if h.data["status"] == "rejected"
        ],
        timeline=[
            f"round {e.round} {e.author}: {e.kind}"
            + (f" ({e.data['status']})" if "status" in e.data else "")
            + f" — {e.data.get('summary') or e.data.get('title', '')}"
            for e in outcome.entries
        ],
    )  # fmt: skip
