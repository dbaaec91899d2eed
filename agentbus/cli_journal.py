"""History commands: ``agentbus runs`` (listing, filters, cost, ``runs prune``), ``agentbus
archive`` (finished runs to the journal archive) and ``agentbus db upgrade``."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ._cli_table import fmt_time, table
from .budget import budget_limits, budget_report, describe
from .costs import load_prices
from .errors import UsageError
from .journal import Journal
from .redact import redact
from .retention import parse_duration
from .transports import open_archive, redact_url, resolve_journal_url
from .transports.archive_format import RunSummary
from .transports.run_query import RunFilter

__all__ = ["archive_url", "register"]


async def cmd_runs(args: argparse.Namespace) -> int:
    if args.action == "prune":
        return await cmd_runs_prune(args)
    where = RunFilter(
        name=args.name,
        status=args.status,
        since=None if args.since is None else _when(args.since),
        until=None if args.until is None else _when(args.until),
        agent=args.agent,
        type=args.type,
    )
    prices = load_prices(args.prices)
    async with Journal.open(args.url, journal_url=args.journal_url) as journal:
        runs = await journal.runs(limit=args.limit, where=where)
        # Tokens per model decide the cost; a run without tokens made no priced call, so
        # its journal is not read for it.
        summaries = {
            r.run_id: await journal.summary(r.run_id) if r.tokens else RunSummary() for r in runs
        }
        # A budgeted run's spend against its limits (its journal is read for it).
        budgets = {
            r.run_id: budget_report(r.meta, await journal.records(r.run_id))
            for r in runs
            if budget_limits(r.meta) is not None
        }
    costs = {run_id: prices.cost(s) for run_id, s in summaries.items()}
    if args.json:
        out = []
        for r in runs:
            s = summaries[r.run_id]
            out.append(
                redact(
                    {
                        **r.to_dict(),
                        "input_tokens": s.input_tokens,
                        "output_tokens": s.output_tokens,
                        "models": s.models,
                        "cost": costs[r.run_id],
                        "budget": budgets.get(r.run_id),
                    }
                )
            )
        print(json.dumps(out, indent=2))
        return 0
    if not runs:
        print("no recorded runs" if where.empty else "no recorded runs match")
        return 0
    rows = [
        (
            r.run_id,
            r.name,
            r.status if not r.late_events else f"{r.status} (+{r.late_events} late)",
            r.events,
            fmt_time(r.started),
            "-" if r.duration is None else f"{r.duration:.3f}s",
            r.tokens,
            "-" if costs[r.run_id] is None else f"${costs[r.run_id]:.4f}",
            *((_budget_cell(budgets.get(r.run_id)),) if budgets else ()),
        )
        for r in runs
    ]
    header = ("RUN", "NAME", "STATUS", "EVENTS", "STARTED", "DURATION", "TOKENS", "COST")
    # The BUDGET column only when a listed run has a budget: other listings look as before.
    print(table(rows, (*header, "BUDGET") if budgets else header))
    return 0


def _budget_cell(report: dict[str, Any] | None) -> str:
    return "-" if report is None else describe(report)


def _when(text: str) -> float:
    """A point in time: ISO 8601 (``2026-11-27``, ``2026-11-27T14:30``; local time
    unless it says otherwise) or a duration ago (``90m``, ``2d``)."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        pass
    try:
        return time.time() - parse_duration(text)
    except UsageError:
        raise UsageError(
            f"invalid time {text!r}: use a date or time (2026-11-27, 2026-11-27T14:30) "
            "or a duration ago (90m, 2d)"
        ) from None


async def cmd_runs_prune(args: argparse.Namespace) -> int:
    if args.older_than is None:
        raise UsageError("runs prune needs --older-than DURATION (e.g. 30m, 12h, 7d)")
    before = time.time() - parse_duration(args.older_than)
    async with Journal.open(args.url, journal_url=args.journal_url) as journal:
        pruned = await journal.transport.store.prune_runs(before=before)
        archived = (
            [] if journal.archive is None else await journal.archive.prune_runs(before=before)
        )
    if args.json:
        out: dict[str, list[str]] = {"pruned": pruned}
        if journal.archive is not None:
            out["pruned_archived"] = archived
        print(json.dumps(out, indent=2))
    else:
        print(f"pruned {len(pruned)} runs with nothing recorded for {args.older_than}")
        if journal.archive is not None:
            print(f"pruned {len(archived)} archived runs older than {args.older_than}")
    return 0


def archive_url(args: argparse.Namespace, command: str) -> str:
    url = resolve_journal_url(args.journal_url)
    if url is None:
        raise UsageError(
            f"{command} needs a journal archive: --journal-url postgresql://... "
            "(or $AGENTBUS_JOURNAL_URL)"
        )
    return url


async def cmd_archive(args: argparse.Namespace) -> int:
    from .archive import archive_runs

    journal_url = archive_url(args, "archive")
    if args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    async with Journal.open(args.url, journal_url=journal_url) as journal:
        assert journal.archive is not None
        report = await archive_runs(
            journal.transport.store,
            journal.archive,
            older_than=parse_duration(args.older_than),
            batch=args.batch,
            limit=args.limit,
        )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    reasons = Counter(report.skipped.values())
    if reasons:
        kept = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
        print(f"kept {len(report.skipped)} runs hot: {kept}")
    print(
        f"archived {len(report.archived)} runs ({report.records} records, "
        f"{report.bytes / 1e6:.1f} MB) to {redact_url(journal_url)} in {report.seconds:.2f}s "
        f"({report.records_per_second:,.0f} records/s)"
    )
    return 0


async def cmd_db(args: argparse.Namespace) -> int:
    url = archive_url(args, "db upgrade")
    archive = open_archive(url)
    try:
        applied = await archive.upgrade()
    finally:
        await archive.aclose()
    if args.json:
        print(json.dumps({"applied": applied}, indent=2))
    elif applied:
        print(f"applied migrations {', '.join(map(str, applied))} to {redact_url(url)}")
    else:
        print(f"{redact_url(url)} is up to date")
    return 0


def register(sub: Any, with_url: Callable[..., argparse.ArgumentParser]) -> None:
    p = with_url(
        sub.add_parser("runs", help="list recorded runs; `runs prune` deletes old ones"),
        journal=True,
    )
    p.add_argument("action", nargs="?", choices=("prune",), help="prune: delete old runs")
    p.add_argument(
        "--older-than",
        metavar="DURATION",
        help="with prune: runs with nothing recorded for this long (30m, 12h, 7d, 2w)",
    )
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--name", help="only runs of this name")
    p.add_argument("--status", help="only runs with this status (running, completed, failed...)")
    p.add_argument(
        "--since", metavar="TIME", help="only runs started at or after TIME (2026-11-27, 2h)"
    )
    p.add_argument("--until", metavar="TIME", help="only runs started before TIME")
    p.add_argument("--agent", help="only runs in which this agent published, handled or called")
    p.add_argument("--type", help="only runs in which an event of this type was published")
    p.add_argument(
        "--prices",
        metavar="JSON",
        help="model price table for the COST column, a file or inline JSON "
        '{"MODEL": {"input": USD_PER_1M, "output": USD_PER_1M}} '
        "(default: $AGENTBUS_MODEL_PRICES)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_runs)

    p = with_url(
        sub.add_parser(
            "archive",
            help="move finished runs from the --url store to the --journal-url archive",
            description="Move finished runs to the journal archive (PostgreSQL). A run's hot "
            "copy is deleted only once the archive has committed it and its record count "
            "and checksum match; a run written to meanwhile stays for the next pass.",
        ),
        journal=True,
    )
    p.add_argument(
        "--older-than",
        default="1h",
        metavar="DURATION",
        help="runs finished (or last active) at least this long ago (default: 1h; 0s: all)",
    )
    p.add_argument("--batch", type=int, default=100, help="runs read per step (default: 100)")
    p.add_argument("--limit", type=int, default=None, help="archive at most this many runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_archive)

    p = with_url(sub.add_parser("db", help="manage the journal archive's schema"), journal=True)
    p.add_argument("action", choices=("upgrade",), help="upgrade: apply missing migrations")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_db)
