"""An engineering organisation (hierarchical): a feature goes down the tree, one plan comes up.

::

    eng-lead                         supervisor: splits the feature by discipline
    ├── frontend                     team: frontend-lead (orchestrator) + frontend engineers
    ├── backend-lead                 supervisor: splits the backend work
    │   ├── api                      team: api-lead + api engineers
    │   └── platform                 team: platform-lead + platform engineers
    └── qa                           team: qa-lead + qa engineers

Each team lead is an orchestrator-worker team: it breaks its part into work items that its
engineers (workers competing on the team's work topic) estimate and plan. Items that touch
the same component share a partition key, so they are planned one after another, in order.
Results roll up: the backend lead merges api and platform, the engineering lead merges
everything into one plan with estimates. If a team fails, its parent retries it, the backend
lead reroutes platform work to the api team, and the engineering lead reports what is missing
rather than failing the whole plan.

Plain Python, no model needed; with a model configured (``agents.model_from_env``) the
engineers draft their steps and the lead writes a summary through it.

    agentbus run examples/engineering_org.py
    ENG_ORG_CHAOS=1 agentbus run examples/engineering_org.py   # engineers crash on first tries
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from agentbus import Agent, App, Context, Run
from agentbus.agents import ChatMessage, ChatModel, ChatRequest, call_model, model_from_env
from agentbus.patterns.hierarchical import Delegation, Escalation, Hierarchy, Node, Team
from agentbus.patterns.orchestrator_worker import (
    Job,
    JobResult,
    Orchestrator,
    Summary,
    Task,
    TaskFailure,
    TaskResult,
    Worker,
)

FEATURE = Job(
    id="feature-42",
    goal="Saved searches with email alerts",
    data={
        "requirements": [
            "Users can save the current search with a name",
            "Saved searches are listed on the account page, where users can rename or delete them",
            "A daily email alert lists new matches for each saved search",
            "Users can turn the alert on or off for each saved search",
        ]
    },
)

# What each discipline does for a requirement, by keyword:
# (keywords, component, work item, its main steps).
# fmt: off
WORK: dict[str, list[tuple[tuple[str, ...], str, str, str]]] = {
    "frontend": [
        (("save the current search",), "search-bar", "Save button and name dialog",
         "add the button to the search bar; build the dialog with name validation"),
        (("listed", "account page"), "account-page", "Saved searches list on the account page",
         "build the list with an empty state; page through results like the API"),
        (("rename", "delete"), "account-page", "Rename and delete actions in the list",
         "inline rename; delete with undo"),
        (("turn the alert",), "account-page", "Alert on/off toggle per saved search",
         "toggle with optimistic update"),
    ],
    "api": [
        (("save the current search",), "saved-searches", "POST /saved-searches endpoint",
         "validate the query and name; cap saved searches per user"),
        (("listed",), "saved-searches", "GET /saved-searches endpoint with paging",
         "cursor paging; sort by last used"),
        (("rename", "delete"), "saved-searches", "PATCH and DELETE /saved-searches/{id}",
         "owner checks; soft delete"),
        (("turn the alert",), "saved-searches", "Alert flag on the saved-search resource",
         "add alert_enabled to requests and responses"),
    ],
    "platform": [
        (("save the current search",), "schema", "saved_searches table and migration",
         "create the table with owner, name and query; add a per-user index"),
        (("email alert",), "alerts", "Daily job that finds new matches per saved search",
         "run each query since the last run; batch by user"),
        (("email alert",), "alerts", "Alert e-mail template and sending with unsubscribe",
         "render the daily digest; one-click unsubscribe link"),
        (("turn the alert",), "schema", "alert_enabled column and index",
         "add the column, on by default; partial index on enabled alerts"),
    ],
    "qa": [
        (("save the current search", "listed"), "e2e", "End-to-end test: save, list, rename, delete",
         "script the user journey; run it on every merge"),
        (("email alert",), "alerts", "Test the daily alert with seeded matches",
         "seed searches and new items; expect one digest per user"),
        (("turn the alert",), "alerts", "Test that disabled alerts send nothing",
         "disable one alert; expect no mail for it"),
        (("email alert",), "load", "Load test of the alert job with 100k saved searches",
         "generate the data; measure job time and database load"),
    ],
}
# Days an engineer adds for what an item involves (on top of half a day for any item).
EFFORT = {
    "dialog": 1.0, "list": 1.0, "rename": 1.0, "toggle": 0.5, "paging": 0.5, "patch": 1.0,
    "post": 0.5, "flag": 0.5, "migration": 1.0, "job": 2.0, "e-mail": 1.5, "unsubscribe": 0.5,
    "index": 0.5, "end-to-end": 1.5, "seeded": 1.0, "disabled": 0.5, "load": 2.0,
}
# fmt: on
# Every item ends with the discipline's definition of done.
DONE = {
    "frontend": "UI tests and an accessibility check",
    "api": "document the endpoint",
    "platform": "monitoring and a rollback plan",
    "qa": "automate in CI",
}


def live_model() -> ChatModel | None:
    """The configured model, or ``None`` offline (then plain Python writes the text)."""
    model = model_from_env()
    return None if model.provider == "offline" else model


# -- the teams: a lead (orchestrator) and its engineers (workers) --------------------------
def plan_for(discipline: str) -> Callable[[Job], list[Task]]:
    """A team lead's planner: the discipline's work items for the requirements given."""

    def plan(job: Job) -> list[Task]:
        text = " ".join(job.data.get("requirements", [])).lower()
        return [
            Task(
                title=item,
                text=f"{item} (for: {job.goal})",
                key=component,  # items on one component are planned in order, one at a time
                data={"steps": steps.split("; ")},
            )
            for keywords, component, item, steps in WORK[discipline]
            if any(k in text for k in keywords)
        ]

    return plan


def team_summary(job: Job, results: list[TaskResult], failures: list[TaskFailure]) -> Summary:
    """A team lead's roll-up: its items with estimates, and what could not be planned."""
    items = [{**r.data, "attempt": r.attempt} for r in results]
    days = sum(i["estimate_days"] for i in items)
    missing = [f"{f.title}: {f.error}" for f in failures]
    lines = [f"- {i['item']} ({i['estimate_days']:g} d)" for i in items]
    return Summary(
        text="\n".join(lines),
        data={"items": items, "days": days, "missing": missing},
        produced_by="team lead (rules)",
    )


class Engineer(Worker):
    """Estimates a work item by rules and lists its steps (drafted by the model if configured)."""

    concurrency = 2

    def __init__(self, discipline: str) -> None:
        super().__init__(topic=f"org.{discipline}.tasks", name=f"{discipline}-engineer")
        self.discipline = discipline
        self.model = live_model()
        self.chaos = os.environ.get("ENG_ORG_CHAOS") == "1"

    async def work(self, task: Task, ctx: Context) -> dict[str, Any]:
        if self.chaos and task.attempt == 1:
            raise RuntimeError(f"{self.name} crashed while planning {task.title!r}")
        words = task.title.lower()
        estimate = 0.5 + sum(days for word, days in EFFORT.items() if word in words)
        steps = [*task.data.get("steps", []), DONE[self.discipline]]
        if self.model is not None:
            request = ChatRequest(
                messages=[
                    ChatMessage.system(
                        "List three short, concrete engineering steps, one per line."
                    ),
                    ChatMessage.user(task.text),
                ]
            )
            response = await call_model(ctx, self.model, request)
            drafted = [s.strip("-*• ").strip() for s in response.text.splitlines() if s.strip()]
            steps = [*drafted[:3], DONE[self.discipline]]
        await ctx.note("engineer.planned", item=task.title, estimate_days=estimate)
        return {
            "item": task.title,
            "team": self.discipline,
            "component": task.key,
            "estimate_days": estimate,
            "steps": steps,
        }

    async def on_stop(self) -> None:
        if self.model is not None:
            await self.model.aclose()


def team(discipline: str, description: str) -> tuple[Team, list[Agent]]:
    lead = Orchestrator(
        name=f"{discipline}-lead",
        topic=f"org.{discipline}.jobs",
        work_topic=f"org.{discipline}.tasks",
        plan=plan_for(discipline),
        aggregate=team_summary,
        task_timeout=45.0,
        max_attempts=2,
        max_in_flight=4,
        failure_policy="best_effort",
    )
    # A lane of four items, each tried twice: the team's worst case stays under its timeout.
    leaf = Team(discipline, f"org.{discipline}.jobs", timeout=400.0, description=description)
    return leaf, [lead, Engineer(discipline)]


# -- the supervisors -------------------------------------------------------------------------
def split_feature(job: Job) -> list[Delegation]:
    """The engineering lead's rule: every discipline gets the requirements."""
    data = dict(job.data)
    return [
        Delegation("frontend", f"Screens for: {job.goal}", data),
        Delegation("backend-lead", f"Services and data for: {job.goal}", data),
        Delegation("qa", f"Test plan for: {job.goal}", data),
    ]


def split_backend(job: Job) -> list[Delegation]:
    """The backend lead's rule: the API team takes user actions, platform storage and jobs."""
    requirements: list[str] = job.data.get("requirements", [])
    platform = [r for r in requirements if re.search(r"save the current|email|alert", r)]
    return [
        Delegation("api", f"API for: {job.goal}", {"requirements": requirements}),
        Delegation("platform", f"Storage and jobs for: {job.goal}", {"requirements": platform}),
    ]


def roll_up(job: Job, results: list[TaskResult], failures: list[TaskFailure]) -> Summary:
    """Merge the children's plans (a supervisor's combine step)."""
    items: list[dict[str, Any]] = []
    missing: list[str] = []
    for r in results:
        items += r.data.get("items", [])
        missing += r.data.get("missing", [])
    missing += [f"{f.title}: {f.error}" for f in failures]
    days = sum(i["estimate_days"] for i in items)
    return Summary(
        text=render_plan(job.goal, items, missing),
        data={"items": items, "days": days, "missing": missing},
        produced_by="plan roll-up (rules)",
    )


class PlanWriter:
    """The engineering lead's combine: the rolled-up plan, plus a model-written summary
    on top when a model is configured."""

    def __init__(self) -> None:
        self.model = live_model()

    async def aggregate(
        self, job: Job, results: list[TaskResult], failures: list[TaskFailure], ctx: Context
    ) -> Summary:
        plan = roll_up(job, results, failures)
        if self.model is None:
            return plan
        request = ChatRequest(
            messages=[
                ChatMessage.system(
                    "Summarise this engineering plan for a product manager in three sentences."
                ),
                ChatMessage.user(plan.text),
            ]
        )
        response = await call_model(ctx, self.model, request)
        text = f"Summary (model {response.model}): {response.text}\n\n{plan.text}"
        return Summary(
            text=text, data=plan.data, produced_by=f"{plan.produced_by} + model:{response.model}"
        )


def render_plan(goal: str, items: list[dict[str, Any]], missing: list[str]) -> str:
    days = sum(i["estimate_days"] for i in items)
    lines = [f'Plan for "{goal}": {len(items)} work items, {days:g} engineer-days']
    teams: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        teams.setdefault(item["team"], []).append(item)
    for name, team_items in teams.items():
        team_days = sum(i["estimate_days"] for i in team_items)
        lines += ["", f"{name} ({len(team_items)} items, {team_days:g} d)"]
        for i in team_items:
            redone = " (re-dispatched)" if i["attempt"] > 1 else ""
            lines.append(
                f"  - {i['item']} [{i['component']}] {i['estimate_days']:g} d{redone}: "
                + "; ".join(i["steps"])
            )
    if missing:
        lines += ["", "Not planned (escalated): " + "; ".join(missing)]
    return "\n".join(lines)


def build() -> tuple[Hierarchy, list[Agent]]:
    """The organisation: the hierarchy's supervisors plus every team's lead and engineers."""
    frontend, fe = team("frontend", "web screens and components")
    api, api_agents = team("api", "HTTP endpoints")
    platform, pf = team("platform", "database, background jobs, e-mail")
    qa, qa_agents = team("qa", "test plans and automation")
    backend = Node(
        "backend-lead",
        "org.backend.jobs",
        [api, platform],
        route=split_backend,
        combine=roll_up,
        escalation=Escalation(retries=1, reroute={"platform": "api"}),
        description="services and data",
    )
    lead = Node(
        "eng-lead",
        "org.lead.jobs",
        [frontend, backend, qa],
        route=split_feature,
        combine=PlanWriter(),
        escalation=Escalation(retries=1, on_failure="report"),
    )
    org = Hierarchy(lead, max_depth=2, max_fanout=4)
    return org, [*org.agents(), *fe, *api_agents, *pf, *qa_agents]


ORG, AGENTS = build()  # validated at import: a misconfigured tree fails before anything runs
app = App("engineering-org", AGENTS)


@app.main
async def main(run: Run) -> str:
    result: JobResult = await run.request(ORG.topic, FEATURE, expect=JobResult, timeout=ORG.timeout)
    redone = [i["item"] for i in result.data["items"] if i["attempt"] > 1]
    footer = [f"Status: {result.status}; text by {result.produced_by}"]
    if redone:
        footer.insert(0, f"Re-dispatched after an engineer failed: {len(redone)} items")
    return result.text + "\n\n" + "\n".join(footer)
