"""``agentbus check-compat [APP]``: list stored events the current code no longer decodes
(and, with ``--replay``, runs that no longer replay identically). Exit 0 when everything
fits, 1 otherwise: a CI gate (see :mod:`agentbus.compat`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from ._cli_table import table
from .compat import check_compat
from .journal import Journal

__all__ = ["register"]


async def cmd_check_compat(args: argparse.Namespace) -> int:
    async with Journal.open(args.url, journal_url=args.journal_url) as journal:
        report = await check_compat(
            journal,
            app=args.app,
            run_ids=args.run or None,
            name=args.name,
            limit=args.limit,
            replay=args.replay,
            url=args.url,
            journal_url=args.journal_url,
        )
    ok = report.ok(strict=args.strict)
    if args.json:
        print(json.dumps({**report.to_dict(), "ok": ok}, indent=2, default=str))
        return 0 if ok else 1
    print(
        f"{report.runs} runs, {report.events} events: {report.fitting} fit the current code, "
        f"{len(report.misfits)} do not, {sum(report.unknown.values())} of unknown types"
    )
    if report.misfits:
        rows = [(m.run_id, m.event_id, m.type, m.reason, m.error[:90]) for m in report.misfits]
        print(table(rows, ("RUN", "EVENT", "TYPE", "REASON", "ERROR")))
    for type_name, count in sorted(report.unknown.items()):
        print(f"unknown type {type_name!r}: {count} events (no loaded code registers it)")
    for run_id, verdict in report.replays.items():
        print(f"replay {run_id}: {verdict}")
    print("ok" if ok else "NOT compatible")
    return 0 if ok else 1


def register(sub: Any, with_url: Callable[..., argparse.ArgumentParser]) -> None:
    p = with_url(
        sub.add_parser(
            "check-compat",
            help="decode every stored event with the current code; exit 1 if any no longer fits",
            description="Decode every recorded event of the stored runs as a consumer would "
            "(types looked up, older versions upcast, payloads validated) and list what no "
            "longer fits; --replay also re-executes each run. See docs/schema-evolution.md.",
        ),
        journal=True,
    )
    p.add_argument(
        "app", nargs="?", default=None, help="FILE.py[:OBJ] or MODULE:OBJ (default: as recorded)"
    )
    p.add_argument("--run", action="append", help="only this run (repeatable)")
    p.add_argument("--name", default=None, help="only runs of this name")
    p.add_argument("--limit", type=int, default=1000, help="newest runs checked (default 1000)")
    p.add_argument("--replay", action="store_true", help="also replay each run")
    p.add_argument("--strict", action="store_true", help="unknown types fail the check too")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_check_compat)
