"""Inspection commands: ``agentbus trace`` (causal tree, timeline or JSON), ``agentbus cancel``."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import UsageError
from .inspect import build_trace, render_timeline, render_tree
from .journal import Journal
from .redact import redact
from .signing import Signer
from .transports import JournalRecord, RunInfo, redact_url

__all__ = ["register"]


async def cmd_trace(args: argparse.Namespace) -> int:
    async with Journal.open(args.url, journal_url=args.journal_url) as journal:
        info = await journal.run(args.run)
        stored = await journal.records(info.run_id)
    records = masked(stored)
    # With signing keys configured ($AGENTBUS_SIGNING_KEYS), every record is verified, as
    # stored: masking changes what the signature covers.
    trace = build_trace(masked_run(info), records, signer=Signer.from_env(), stored=stored)
    trace = trace.filtered(agent=args.agent, type_=args.type, topic=args.topic)
    if args.html:
        from .html import render_html

        Path(args.html).write_text(render_html(trace, records), encoding="utf-8")
        print(f"wrote {args.html} ({len(trace.events)} events)")
        return 0
    if args.json:
        print(json.dumps(trace.to_dict(payloads=args.show_payloads), indent=2, default=str))
    elif args.timeline:
        print(render_timeline(trace))
    else:
        print(render_tree(trace, payloads=args.show_payloads))
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a running run everywhere; exit 1 when it had already ended."""
    from ._cancel import cancel_run

    by = f"agentbus cancel ({getpass.getuser()}@{socket.gethostname()})"
    async with Journal.open(args.url, journal_url=args.journal_url) as journal:
        info = await journal.run(args.run)  # an unknown run: a usage error (exit 2)
        done = await cancel_run(journal.transport.store, info.run_id, by=by)
    if not done:
        print(f"run {info.run_id} already ended ({info.status}); nothing to cancel")
        return 1
    print(f"cancelled run {info.run_id} ({info.name})")
    return 0


def masked(records: list[JournalRecord]) -> list[JournalRecord]:
    """The records with their secrets masked, for showing (events included)."""
    return [replace(r, record=redact(r.record)) for r in records]


def masked_run(info: RunInfo) -> RunInfo:
    """The run with its metadata masked, for showing."""
    return replace(info, meta=redact(info.meta))


async def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import replay_run

    result = await replay_run(
        args.run,
        url=args.url,
        app=args.app,
        fork_at=args.fork_at,
        allow_unverified=args.allow_unverified,
        journal_url=args.journal_url,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        mode = "fork" if result.fork_at is not None else "replay"
        print(
            f"{mode} of {result.source_run_id} recorded as run {result.run_id}: "
            f"{result.produced_events} events (recorded {result.recorded_events}), "
            f"{result.substituted_calls} calls from the recording, {result.live_calls} live, "
            f"{result.seconds:.2f}s"
        )
        for bad in result.unverified:
            print(f"⚠ unverified record {bad['seq']} {bad['kind']}: {bad['reason']}")
        if result.divergence is None:
            print("identical")
        else:
            if result.verdict == "diverged_after_fork":
                print(f"the fork follows the recording up to event #{result.fork_at}, then:")
            print(result.divergence.describe())
    return result.exit_code


async def cmd_diff(args: argparse.Namespace) -> int:
    from .compare import diff_runs

    async with Journal.open(args.url, journal_url=args.journal_url) as journal:
        a = await journal.run(args.run_a)
        b = await journal.run(args.run_b)
        ea = [e.to_dict() for e in await journal.events(a.run_id)]
        eb = [e.to_dict() for e in await journal.events(b.run_id)]
    diff = diff_runs(a.run_id, ea, b.run_id, eb)
    if args.json:
        print(json.dumps(diff.to_dict(), indent=2, default=str))
    else:
        print(diff.describe())
    return 0 if diff.identical else 1


async def cmd_export(args: argparse.Namespace) -> int:
    from .exchange import export_to

    async with Journal.open(args.url, journal_url=args.journal_url) as journal:
        info = await journal.run(args.run)
        records = await journal.records(info.run_id)
    n = export_to(Path(args.output), info, records)
    print(f"exported run {info.run_id}: {n} lines to {args.output}")
    return 0


async def cmd_import(args: argparse.Namespace) -> int:
    from .exchange import import_file

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no such file: {args.file!r}")
    async with Journal.open(args.url) as journal:
        with path.open(encoding="utf-8") as stream:
            info = await import_file(journal.transport, stream)
    print(f"imported run {info.run_id} ({info.name}) into {redact_url(journal.transport.url)}")
    return 0


def register(sub: Any, with_url: Callable[..., argparse.ArgumentParser]) -> None:
    p = with_url(sub.add_parser("trace", help="a run's events as a causal tree"), journal=True)
    p.add_argument("run", help="run id (or a unique prefix)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML page")
    p.add_argument("--timeline", action="store_true", help="events in time order instead of a tree")
    p.add_argument("--show-payloads", action="store_true", help="include each event's data")
    p.add_argument("--agent", help="only events sent or handled by this agent")
    p.add_argument("--type", help="only events of this message type")
    p.add_argument("--topic", help="only events on this topic")
    p.set_defaults(fn=cmd_trace)

    p = with_url(
        sub.add_parser(
            "cancel",
            help="cancel a running run in every process; exit 1 if it had already ended",
            description="Mark the run cancelled: every worker cancels its handlers of the run "
            "and acks the run's queued events unhandled (see docs/durability.md).",
        ),
        journal=True,
    )
    p.add_argument("run", help="run id (or a unique prefix)")
    p.set_defaults(fn=cmd_cancel)

    p = with_url(
        sub.add_parser(
            "replay",
            help="re-execute (or fork) a run; exit 0 identical, 1 diverged, 3 fork differs after N",
            description="Re-execute a recorded run, answering every model and tool call from "
            "the recording (whatever model is configured now), and compare the events.",
            epilog="exit status: 0 identical to the recording; 1 diverged (with --fork-at: "
            "before event N, so the fork does not continue the recorded run) or failed; "
            "2 usage error; 3 with --fork-at only: identical before event N, different from "
            "N on.",
        ),
        journal=True,
    )
    p.add_argument("run", help="run id (or a unique prefix)")
    p.add_argument("--app", default=None, help="MODULE:OBJ or FILE.py[:OBJ] (default: as recorded)")
    p.add_argument(
        "--fork-at",
        type=int,
        default=None,
        metavar="N",
        help="use recorded model/tool results before event N, live calls from N on",
    )
    p.add_argument(
        "--allow-unverified",
        action="store_true",
        help="replay even if journal records fail signature verification (they are listed)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_replay)

    p = with_url(
        sub.add_parser("export", help="write a run as CloudEvents JSON lines"), journal=True
    )
    p.add_argument("run")
    p.add_argument("-o", "--output", required=True, help="FILE.jsonl")
    p.set_defaults(fn=cmd_export)

    p = with_url(sub.add_parser("import", help="load a run exported with `agentbus export`"))
    p.add_argument("file")
    p.set_defaults(fn=cmd_import)

    p = with_url(sub.add_parser("diff", help="where two runs part"), journal=True)
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_diff)
