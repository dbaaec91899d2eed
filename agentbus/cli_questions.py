"""Questions to people: ``agentbus pending`` (what waits for an answer) and ``agentbus
answer RUN QUESTION JSON`` (answer one; the run resumes on a worker hosting its agent)."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from ._cli_table import fmt_time, table
from ._questions import answer_question
from .errors import InvalidAnswer, QuestionClosed, UnknownQuestion, UsageError
from .journal import Journal
from .redact import redact

__all__ = ["register"]


def _ago(ts: float) -> str:
    seconds = max(0.0, time.time() - ts)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


async def cmd_pending(args: argparse.Namespace) -> int:
    async with Journal.open(args.url, journal_url=args.journal_url) as journal:
        run_id = None if args.run is None else (await journal.run(args.run)).run_id
        questions = await journal.transport.store.list_questions(run_id=run_id)
    if args.json:
        print(json.dumps([redact(q.to_dict()) for q in questions], indent=2, default=str))
        return 0
    if not questions:
        print("no questions waiting for an answer")
        return 0
    rows = [
        (
            q.run_id,
            q.agent,
            q.question_id,
            q.question_type,
            q.summary[:60],
            f"{fmt_time(q.asked)} ({_ago(q.asked)})",
            "-" if q.deadline is None else fmt_time(q.deadline),
        )
        for q in questions
    ]
    print(table(rows, ("RUN", "AGENT", "QUESTION", "TYPE", "SUMMARY", "ASKED", "DEADLINE")))
    print("\nanswer one with: agentbus answer RUN QUESTION '<JSON>'")
    return 0


async def cmd_answer(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.answer == "-" else args.answer
    try:
        answer: Any = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"the answer must be JSON, e.g. '{{\"approve\": true}}': {exc}") from None
    by = f"agentbus answer ({getpass.getuser()}@{socket.gethostname()})"
    async with Journal.open(args.url, journal_url=args.journal_url) as journal:
        info = await journal.run(args.run)  # an unknown run: a usage error (exit 2)
        try:
            q = await answer_question(
                journal.transport.store, info.run_id, args.question, answer, by=by
            )
        except UnknownQuestion as exc:
            raise UsageError(str(exc)) from None
        except (QuestionClosed, InvalidAnswer) as exc:
            print(f"agentbus: error: {exc}", file=sys.stderr)
            return 1
    print(
        f"answered question {q.question_id} of run {info.run_id}; the run resumes on a "
        f"worker hosting {q.agent}"
    )
    return 0


def register(sub: Any, with_url: Callable[..., argparse.ArgumentParser]) -> None:
    p = with_url(
        sub.add_parser(
            "pending",
            help="questions handlers asked people (ctx.ask_human) that wait for an answer",
        ),
        journal=True,
    )
    p.add_argument("--run", default=None, help="only this run's (an id or a unique prefix)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_pending)

    p = with_url(
        sub.add_parser(
            "answer",
            help="answer a waiting question; its run resumes on a worker hosting the agent",
            description="Answer a question a handler asked (see `agentbus pending`). The "
            "answer is checked against the type the handler expects. Exit 0 when answered, "
            "1 when the question is closed (answered, timed out, withdrawn) or the answer "
            "does not fit, 2 for an unknown run or question.",
        ),
        journal=True,
    )
    p.add_argument("run", help="run id (or a unique prefix)")
    p.add_argument("question", help="question id (or a unique prefix)")
    p.add_argument("answer", help="the answer as JSON, e.g. '{\"approve\": true}' ('-': stdin)")
    p.set_defaults(fn=cmd_answer)
