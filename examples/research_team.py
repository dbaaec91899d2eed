"""A research team (orchestrator-worker): a lead splits a question, researchers answer, a writer merges.

The lead plans the question into sub-questions, one per aspect the shipped corpus covers
(``examples/data/research/``, a dozen short notes on honeybee health). Researcher workers
compete for the sub-questions on a shared work topic and answer each from the corpus through
the ``search_corpus`` tool. The writer merges the answers into one report with its sources.
Every tool and model call goes through ``ctx.invoke``, so it is journaled and replayable, and
``agentbus trace RUN`` shows the lead's steps (``ow.planned``, ``ow.dispatched``...).

Offline (the default) the text is extractive: plain Python picks the corpus sentences that
best match each sub-question, and the report says so. With a model configured
(``OPENAI_API_KEY`` / ``AGENTBUS_MODEL_URL``, see ``agents.model_from_env``) the lead plans,
the researchers answer and the writer merges through the model instead.

    agentbus run examples/research_team.py
    RESEARCH_QUESTION="How do bees find food?" agentbus run examples/research_team.py

More researchers, in other processes (Redis):

    agentbus worker examples.research_team:app --url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agentbus import App, Context, Run
from agentbus.agents import ChatMessage, ChatModel, ChatRequest, call_model, model_from_env
from agentbus.agents.tools import tool
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
)

CORPUS = Path(__file__).parent / "data" / "research"
JOBS = "research.jobs"
TASKS = "research.tasks"
QUESTION = "Why are honeybee colonies declining, and what can beekeepers do about it?"
EXTRACTIVE = "extractive: corpus sentences picked by plain Python, no language model"

# -- the corpus and its search tool -----------------------------------------------------------
_STOPWORDS = frozenset(
    (  # noqa: SIM905 - a word list reads better as text than as seventy quoted words
        "a about after all also an and any are as at be been but by can do does for from has "
        "have how in into is it its many more most much not of on one or other out so some "
        "such than that the their them then there these they this those through to too up was "
        "what when where which while who why will with would"
    ).split()
)


def terms(text: str) -> list[str]:
    """Lower-case word stems without stopwords (a crude stemmer is enough for ranking)."""
    out = []
    for word in re.findall(r"[a-z][a-z-]+", text.lower()):
        if word in _STOPWORDS:
            continue
        if word.endswith("ies") and len(word) > 4:
            word = word[:-3] + "y"
        for suffix in ("ing", "ed", "es", "s"):
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                word = word[: -len(suffix)]
                break
        out.append(word.removesuffix("e"))
    return out


# A small domain thesaurus: offline, it stands in for a model's sense of what a question
# is about ("declining" is answered by notes on losses and threats, not by the word itself).
RELATED = {
    "declin": "losses die collapse threats stress pests disease pesticides mites",
    "beekeeper": "practices monitoring treatment manage prevent protect",
    "help": "practices protect forage habitat",
    "food": "forage nectar pollen dance",
}


def expand(text: str) -> str:
    """``text`` plus the related words of its terms."""
    extra = [RELATED[t] for t in dict.fromkeys(terms(text)) if t in RELATED]
    return " ".join([text, *extra])


@dataclass(frozen=True)
class Doc:
    name: str
    title: str
    sentences: tuple[str, ...]
    counts: Counter[str]
    title_terms: frozenset[str]


@cache
def corpus() -> tuple[Doc, ...]:
    """The shipped notes, sorted by file name (so ties rank the same everywhere)."""
    docs = []
    for path in sorted(CORPUS.glob("*.md")):
        lines = path.read_text(encoding="utf-8").splitlines()
        title = lines[0].lstrip("# ").strip()
        body = " ".join(line.strip() for line in lines[1:] if line.strip())
        sentences = tuple(s for s in re.split(r"(?<=[.!?])\s+", body) if s)
        docs.append(Doc(path.name, title, sentences, Counter(terms(body)), frozenset(terms(title))))
    return tuple(docs)


def _idf(term: str) -> float:
    docs = corpus()
    having = sum(1 for d in docs if term in d.counts)
    return math.log(1 + (len(docs) - having + 0.5) / (having + 0.5))


def weight(sentence: str, wanted: set[str]) -> float:
    """How much of ``wanted`` a sentence covers, rare words counting more."""
    return sum(_idf(t) for t in wanted & set(terms(sentence)))


@tool
def search_corpus(query: str, limit: int = 3) -> dict[str, Any]:
    """Search the honeybee notes by keywords; returns the best documents and passages.

    Args:
        query: Words to look for.
        limit: How many documents to return at most.
    """
    wanted = set(terms(query))
    scored = []
    for doc in corpus():
        score = sum(
            _idf(t) * (doc.counts[t] / (doc.counts[t] + 1.2) + (1.0 if t in doc.title_terms else 0))
            for t in wanted
        )
        if score > 0:
            scored.append((round(score, 4), doc))
    scored.sort(key=lambda pair: (-pair[0], pair[1].name))
    hits = []
    for score, doc in scored[:limit]:
        ranked = sorted(
            range(len(doc.sentences)), key=lambda i: (-weight(doc.sentences[i], wanted), i)
        )
        passages = [doc.sentences[i] for i in sorted(ranked[:3])]
        hits.append({"doc": doc.name, "title": doc.title, "score": score, "passages": passages})
    return {"query": query, "hits": hits}


async def search(ctx: Context, query: str, limit: int = 3) -> dict[str, Any]:
    """``search_corpus`` through the journaled, replayable seam."""
    args = {"query": query, "limit": limit}

    async def call() -> dict[str, Any]:
        result: dict[str, Any] = await search_corpus.invoke(args)
        return result

    return await ctx.invoke("tool", search_corpus.name, args, call)


def live_model() -> ChatModel | None:
    """The configured model, or ``None`` offline: the offline model's prose would only echo
    its prompt, so plain Python writes the text instead (and says so)."""
    model = model_from_env()
    return None if model.provider == "offline" else model


# -- the lead: plan and write -------------------------------------------------------------------
class QuestionPlanner:
    """Splits the question into clauses, and each clause into the aspects the corpus covers."""

    def __init__(self, per_clause: int = 3, max_tasks: int = 6) -> None:
        self.per_clause = per_clause
        self.max_tasks = max_tasks

    async def plan(self, job: Job, ctx: Context) -> list[Task]:
        clauses = [c.strip(" ,;?") for c in re.split(r",\s*and\s+|;|\?", job.goal)]
        tasks: list[Task] = []
        seen: set[str] = set()
        for clause in filter(None, clauses):
            found = await search(ctx, expand(clause), limit=self.per_clause + 2)
            # Aspects that score at least half as well as the best one, new to the plan.
            top = found["hits"][0]["score"] if found["hits"] else 0
            fresh = [h for h in found["hits"] if h["doc"] not in seen and h["score"] >= top / 2][
                : self.per_clause
            ]
            for hit in fresh:
                seen.add(hit["doc"])
                tasks.append(
                    Task(
                        title=hit["title"],
                        text=f"{clause}: what do the notes on {hit['title'].lower()} say?",
                        data={"clause": clause, "focus": hit["doc"]},
                    )
                )
        return tasks[: self.max_tasks]


def write_report(job: Job, results: list[TaskResult], failures: list[TaskFailure]) -> Summary:
    """Merge the researchers' answers by clause, without repeating a sentence."""
    sections: dict[str, list[str]] = {}
    used: set[str] = set()
    sources: list[str] = []
    for r in results:
        fresh = [s for s in r.data.get("sentences", []) if s["text"] not in used]
        used.update(s["text"] for s in fresh)
        if not fresh:
            continue
        cited = " ".join(f"{s['text']} [{s['doc']}]" for s in fresh)
        sections.setdefault(r.data.get("clause", job.goal), []).append(f"- {r.title}: {cited}")
        sources += sorted({s["doc"] for s in fresh} - set(sources))
    parts = [
        f"{clause[:1].upper()}{clause[1:]}?\n" + "\n".join(items)
        for clause, items in sections.items()
    ]
    if failures:
        parts.append("Not answered: " + "; ".join(f"{f.title} ({f.error})" for f in failures))
    parts.append("Sources: " + ", ".join(sources))
    return Summary(
        text="\n\n".join(parts), data={"sources": sources}, produced_by=f"writer ({EXTRACTIVE})"
    )


WRITER_INSTRUCTIONS = (
    "You are the writer of a research team. Merge the researchers' answers into one clear, "
    "well-organised answer to the question, in a few short paragraphs. Keep the [file.md] "
    "citations from the answers and add no facts of your own."
)


class ResearchLead(Orchestrator, name="research-lead"):
    """Plans the question, dispatches sub-questions to the researchers, has the answer written."""

    def __init__(self) -> None:
        self.model = live_model()
        super().__init__(
            topic=JOBS,
            work_topic=TASKS,
            plan=ModelPlanner(self.model, max_tasks=6) if self.model else QuestionPlanner(),
            aggregate=(
                ModelAggregator(self.model, instructions=WRITER_INSTRUCTIONS)
                if self.model
                else write_report
            ),
            task_timeout=90.0 if self.model else 15.0,
            max_attempts=2,
            max_in_flight=3,
            failure_policy="best_effort",
        )

    async def on_stop(self) -> None:
        if self.model is not None:
            await self.model.aclose()


# -- the researchers ------------------------------------------------------------------------------
class Researcher(Worker, name="researcher"):
    """Answers one sub-question from the corpus (with the model when one is configured)."""

    concurrency = 3

    def __init__(self) -> None:
        super().__init__(topic=TASKS)
        self.model = live_model()

    async def work(self, task: Task, ctx: Context) -> TaskResult:
        query = expand(task.text)
        found = await search(ctx, query, limit=3)
        hits = found["hits"]
        focus = task.data.get("focus")
        hits.sort(key=lambda h: h["doc"] != focus)  # the planned aspect first (stable sort)
        data = {"clause": task.data.get("clause", task.text), "docs": [h["doc"] for h in hits]}
        if self.model is None:
            sentences = pick_sentences(hits, focus, set(terms(expand(data["clause"]))))
            text = " ".join(f"{s['text']} [{s['doc']}]" for s in sentences)
            return TaskResult(text=text, data={**data, "sentences": sentences, "by": EXTRACTIVE})
        notes = "\n".join(f"[{h['doc']}] " + " ".join(h["passages"]) for h in hits)
        request = ChatRequest(
            messages=[
                ChatMessage.system(
                    "Answer the question in two or three sentences using only the notes. "
                    "Cite the notes you use as [file.md]."
                ),
                ChatMessage.user(f"Question: {task.text}\n\nNotes:\n{notes}"),
            ]
        )
        response = await call_model(ctx, self.model, request)
        return TaskResult(text=response.text, data={**data, "by": f"model:{response.model}"})

    async def on_stop(self) -> None:
        if self.model is not None:
            await self.model.aclose()


def pick_sentences(
    hits: list[dict[str, Any]], focus: str | None, wanted: set[str]
) -> list[dict[str, str]]:
    """The two passages of the planned aspect (else of the best hit) that answer the clause
    best, judged by the clause's words rather than the aspect's title, in document order."""
    hit = next((h for h in hits if h["doc"] == focus), hits[0] if hits else None)
    if hit is None:
        return []
    passages: list[str] = hit["passages"]
    best = sorted(range(len(passages)), key=lambda i: (-weight(passages[i], wanted), i))[:2]
    return [{"doc": hit["doc"], "text": passages[i]} for i in sorted(best)]


app = App("research-team", [ResearchLead, Researcher])


def render(question: str, result: JobResult) -> str:
    """The report as printed by ``agentbus run``."""
    answers = ", ".join(f"{r.index + 1}. {r.title}" for r in result.results)
    retried = [r.title for r in result.results if r.attempt > 1]
    lines = [
        f"Question: {question}",
        "",
        result.text,
        "",
        f"Researched ({len(result.results)} sub-questions): {answers}",
    ]
    if retried:
        lines.append(f"Re-dispatched after a failure: {', '.join(retried)}")
    lines.append(f"Status: {result.status}; text by {result.produced_by}")
    return "\n".join(lines)


@app.main
async def main(run: Run) -> str:
    question = os.environ.get("RESEARCH_QUESTION", QUESTION)
    result: JobResult = await run.request(
        JOBS, Job(id="question-1", goal=question), expect=JobResult, timeout=300
    )
    return render(question, result)
