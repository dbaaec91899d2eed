"""The ``agentbus`` command line.

The transport URL comes from ``--url``, else ``$AGENTBUS_URL``, else the embedded
default ``memory://`` (journal in ``./.agentbus/``). Every listing takes ``--json``.
Errors are one line on stderr: exit 2 for a usage mistake, 1 for a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from ._cli_table import table
from ._hooks import Tracer
from .app import load_app
from .dead_letters import retry_dead_letters
from .errors import TransportUnavailable, UsageError
from .partitions import fold_partitions
from .redact import masked_output, redact_text
from .retention import Retention, parse_duration
from .runtime import Runtime
from .transports import (
    JournalArchive,
    open_archive,
    open_transport,
    redact_url,
    resolve_url,
)

__all__ = ["main"]

log = logging.getLogger("agentbus.cli")


def _render_result(result: Any) -> str:
    if isinstance(result, BaseModel):
        return result.model_dump_json(indent=2)
    if isinstance(result, dict | list):
        return json.dumps(result, indent=2, default=str)
    return str(result)


def _tracer(args: argparse.Namespace, service: str) -> Tracer | None:
    """The tracer ``--trace`` (else ``$AGENTBUS_TRACING``) asks for; ``None`` when off."""
    if not (args.trace or os.environ.get("AGENTBUS_TRACING")):
        return None  # OpenTelemetry is not even imported
    from .tracing import configure_tracing

    # Global, so spans users create in handlers join the run's trace; the SDK flushes
    # the providers at interpreter exit.
    return configure_tracing(
        args.trace, service_name=service, instance_id=args.consumer, set_global=True
    )


# -- commands -------------------------------------------------------------------------------
async def cmd_run(args: argparse.Namespace) -> int:
    app = load_app(args.file)
    url = resolve_url(args.url)
    rt = Runtime(url, tracer=_tracer(args, "agentbus-run"), partitions=app.partitions)
    if not args.no_agents:
        # Added before start, so start() has created every subscription (broadcast ones
        # included) before the run publishes its first event.
        rt.add(*app.build_agents())
    async with rt:
        run = rt.run(app, meta={"url": redact_url(url)})
        async with run:
            result = await app.run_main(run)
    if args.json:
        payload = {
            "run_id": run.run_id,
            "status": run.info.status,
            "result": result.model_dump(mode="json") if isinstance(result, BaseModel) else result,
        }
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(_render_result(result))
        print(f"\nrun id: {run.run_id}  (inspect with: agentbus trace {run.run_id})")
    return 0


def _shared_url(url: str | None, command: str, why: str) -> str:
    """The URL of a command that needs a store other processes share (not ``memory://``).

    Raises :class:`UsageError` with a one-line hint when it would be the embedded one.
    """
    resolved = resolve_url(url)
    if resolved.startswith("memory:"):
        raise UsageError(
            f"agentbus {command} needs Redis: {why}; pass --url redis://HOST:6379/0 "
            "(redis+cluster://HOST:PORT,HOST:PORT/ for Redis Cluster, "
            "redis+sentinel://HOST:PORT,HOST:PORT/SERVICE for Sentinel) or set AGENTBUS_URL"
        )
    return resolved


async def cmd_worker(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    if args.url is None and not os.environ.get("AGENTBUS_URL"):
        # An explicit --url memory:// is a choice (a self-contained process); the default
        # is not: no other process could reach the agents it hosts.
        _shared_url(None, "worker", "on the embedded memory:// no other process can reach it")
    url = resolve_url(args.url)
    rt = Runtime(
        url,
        concurrency=args.concurrency,
        consumer=args.consumer,
        visibility_timeout=args.visibility_timeout,
        max_attempts=args.max_attempts,
        grace_period=args.grace_period,
        tracer=_tracer(args, "agentbus-worker"),
        retention=_worker_retention(args),
        partitions=app.partitions,
        partition_lease=parse_duration(args.partition_lease),
    )
    agents = app.build_agents()
    if not agents:
        raise UsageError(f"app {app.name!r} has no agents to host")
    rt.add(*agents)
    archive = _worker_archive(args)
    archiver: asyncio.Task[None] | None = None
    try:
        await rt.start()
        names = ", ".join(sorted({a.name for a in agents}))
        print(f"worker {rt.consumer} hosting {names} on {redact_url(url)}", flush=True)
        if archive is not None:
            from .archive import run_archiver

            await archive.connect()
            archiver = asyncio.create_task(
                run_archiver(
                    rt.transport.store,
                    archive,
                    older_than=parse_duration(args.archive_after),
                    every=parse_duration(args.maintenance_interval),
                ),
                name="agentbus-archiver",
            )
            print(
                f"worker {rt.consumer} archives runs finished {args.archive_after} ago "
                f"to {redact_url(archive.url)}",
                flush=True,
            )
        await rt.serve()
    finally:
        if archiver is not None:
            archiver.cancel()
            await asyncio.gather(archiver, return_exceptions=True)
        if archive is not None:
            await archive.aclose()
        await rt.aclose()
    print(f"worker {rt.consumer} stopped", flush=True)
    return 0


def _worker_archive(args: argparse.Namespace) -> JournalArchive | None:
    """The archive ``--archive-after`` moves finished runs to (``None``: no archiver)."""
    if args.archive_after is None:
        return None
    after = parse_duration(args.archive_after)  # a bad duration fails before the start
    if args.journal_retention is not None and parse_duration(args.journal_retention) <= after:
        raise UsageError(
            f"--journal-retention {args.journal_retention} would delete runs before "
            f"--archive-after {args.archive_after} archives them: make the retention longer"
        )
    from .cli_journal import archive_url

    return open_archive(archive_url(args, "worker --archive-after"))


def _worker_retention(args: argparse.Namespace) -> Retention:
    dead_after = parse_duration(args.dead_after)
    return Retention(
        interval=parse_duration(args.maintenance_interval),
        journal=None if args.journal_retention is None else parse_duration(args.journal_retention),
        dead_consumers=dead_after,
        heartbeat=min(Retention().heartbeat, dead_after / 4),
    )


_IN_PROCESS = "the embedded memory:// transport keeps topics inside the process that ran them"


async def cmd_prune(args: argparse.Namespace) -> int:
    age = parse_duration(args.older_than)
    url = _shared_url(
        args.url, "prune", "on the embedded memory:// no other process has workers to prune"
    )
    transport = open_transport(url)
    try:
        await transport.connect()
        dead = await transport.admin.prune_dead_consumers(
            idle_ms=int(age * 1000), dry_run=args.dry_run
        )
    finally:
        await transport.aclose()
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "dead": [d.to_dict() for d in dead]}, indent=2))
        return 0
    if dead:
        rows = [
            (
                d.consumer,
                f"{d.idle:.0f}s",
                ", ".join(f"{t}/{g}" for t, g in d.groups) or "-",
                d.inbox or "-",
            )
            for d in dead
        ]
        print(table(rows, ("CONSUMER", "NOT SEEN FOR", "BROADCAST GROUPS", "INBOX")))
    verb = "would prune" if args.dry_run else "pruned"
    print(f"{verb} {len(dead)} workers not seen for {args.older_than}")
    return 0


async def cmd_topics(args: argparse.Namespace) -> int:
    transport = open_transport(_shared_url(args.url, "topics", _IN_PROCESS))
    try:
        await transport.connect()
        topics = await transport.admin.topics()
    finally:
        await transport.aclose()
    if args.json:
        print(json.dumps([t.to_dict() for t in topics], indent=2))
        return 0
    if not topics:
        print("no topics")
        return 0
    rows: list[tuple[Any, ...]] = []
    for t in fold_partitions(topics):
        if not t.groups:
            rows.append((t.topic, t.length, "-", "-", "-", "-", t.dead_letters))
        for g in t.groups:
            rows.append(
                (
                    t.topic,
                    t.length,
                    g.name,
                    g.consumers,
                    g.pending,
                    "-" if g.lag is None else g.lag,
                    t.dead_letters,
                )
            )
    print(table(rows, ("TOPIC", "LENGTH", "GROUP", "CONSUMERS", "PENDING", "LAG", "DEAD")))
    return 0


async def cmd_dlq(args: argparse.Namespace) -> int:
    transport = open_transport(_shared_url(args.url, "dlq", _IN_PROCESS))
    try:
        await transport.connect()
        if args.action == "list":
            letters = await transport.admin.dead_letters(args.topic, count=args.limit)
            if args.json:
                print(json.dumps([d.to_dict() for d in letters], indent=2))
            elif not letters:
                print(f"no dead letters on {args.topic!r}")
            else:
                rows = [
                    (d.id, d.origin_id, d.agent, d.attempts, d.reason, d.error[:60])
                    for d in letters
                ]
                print(table(rows, ("ID", "ORIGIN", "AGENT", "ATTEMPTS", "REASON", "ERROR")))
        elif args.action == "show":
            letters = await transport.admin.dead_letters(args.topic, count=100_000)
            chosen = [d for d in letters if not args.ids or d.id in args.ids]
            print(json.dumps([d.to_dict() for d in chosen], indent=2))
        elif args.action == "retry":
            outcome = await retry_dead_letters(transport, args.topic, args.ids or None)
            for letter_id, why in outcome.skipped.items():
                print(f"skipped {letter_id}: {why}")
            print(f"re-published {len(outcome.retried)} dead letters to {args.topic!r}")
        elif args.action == "purge":
            n = await transport.admin.remove_dead_letters(args.topic, args.ids or None)
            print(f"purged {n} dead letters from {args.topic!r}")
    finally:
        await transport.aclose()
    return 0


# -- entry point ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentbus",
        description="Run, host and inspect agentbus multi-agent systems.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of an error, not one line"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_url(p: argparse.ArgumentParser, *, journal: bool = False) -> argparse.ArgumentParser:
        p.add_argument(
            "--url",
            default=None,
            help="transport URL: redis://HOST:PORT/DB, redis+cluster://HOST:PORT,HOST:PORT/, "
            "redis+sentinel://HOST:PORT,HOST:PORT/SERVICE, rediss... for TLS, or memory:// "
            "(default: $AGENTBUS_URL, else memory:// with ./.agentbus/)",
        )
        if not journal:
            return p
        p.add_argument(
            "--journal-url",
            default=None,
            help="journal archive finished runs are moved to: postgresql://USER@HOST:PORT/DB"
            "[?schema=NAME] (default: $AGENTBUS_JOURNAL_URL, else none: every run stays in "
            "the --url store)",
        )
        return p

    def with_trace(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--trace",
            default=None,
            metavar="EXPORTER",
            help="OpenTelemetry export: console, otlp (OTEL_* variables), jsonl:PATH or off "
            "(default: $AGENTBUS_TRACING, else off)",
        )

    p = with_url(sub.add_parser("run", help="run an app script and print its result and run id"))
    p.add_argument("file", help="FILE.py (or MODULE:OBJ) defining an agentbus.App")
    p.add_argument(
        "--no-agents", action="store_true", help="drive the run only; workers host the agents"
    )
    p.add_argument("--json", action="store_true")
    with_trace(p)
    p.set_defaults(fn=cmd_run, consumer=None)

    p = with_url(
        sub.add_parser("worker", help="host an app's agents until SIGINT/SIGTERM"), journal=True
    )
    p.add_argument("app", help="MODULE:OBJ or FILE.py[:OBJ]")
    p.add_argument("--concurrency", type=int, default=64, help="handlers at once per agent")
    p.add_argument("--consumer", default=None, help="consumer name (default: host-pid-random)")
    p.add_argument(
        "--visibility-timeout",
        type=float,
        default=30.0,
        help="seconds before another worker may claim an unacknowledged event",
    )
    p.add_argument("--max-attempts", type=int, default=3, help="tries before dead-lettering")
    p.add_argument("--grace-period", type=float, default=10.0, help="seconds to finish on stop")
    p.add_argument(
        "--partition-lease",
        default="10s",
        metavar="DURATION",
        help="how soon a dead worker's partitions are taken over (default: 10s)",
    )
    p.add_argument(
        "--journal-retention",
        default=None,
        metavar="DURATION",
        help="prune runs with nothing recorded for this long, e.g. 7d (default: keep all)",
    )
    p.add_argument(
        "--dead-after",
        default="10m",
        metavar="DURATION",
        help="delete broadcast groups and reply inboxes of workers not seen for this long",
    )
    p.add_argument(
        "--maintenance-interval",
        default="60s",
        metavar="DURATION",
        help="how often to trim topics and prune (default: 60s)",
    )
    p.add_argument(
        "--archive-after",
        default=None,
        metavar="DURATION",
        help="move runs finished this long ago to the --journal-url archive, every "
        "maintenance interval (default: no archiver)",
    )
    with_trace(p)
    p.set_defaults(fn=cmd_worker)

    from . import cli_journal  # runs, archive, db

    cli_journal.register(sub, with_url)

    p = with_url(
        sub.add_parser(
            "prune", help="delete broadcast groups and reply inboxes of workers that died"
        )
    )
    p.add_argument(
        "--older-than",
        default="10m",
        metavar="DURATION",
        help="workers not seen for this long (default: 10m)",
    )
    p.add_argument("--dry-run", action="store_true", help="list them, delete nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_prune)

    p = with_url(sub.add_parser("topics", help="topics with groups, pending, lag and dead letters"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_topics)

    p = with_url(sub.add_parser("dlq", help="inspect, retry or purge a topic's dead letters"))
    p.add_argument("action", choices=("list", "show", "retry", "purge"))
    p.add_argument("topic")
    p.add_argument("ids", nargs="*", help="dead-letter ids (default: all)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_dlq)

    from . import cli_inspect  # the trace/replay/export commands

    cli_inspect.register(sub, with_url)

    from . import cli_questions  # pending, answer

    cli_questions.register(sub, with_url)

    from . import cli_compat  # check-compat

    cli_compat.register(sub, with_url)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agentbus`` console script; returns the exit code.

    Everything the command writes to stdout and stderr (output, logs, errors, tracebacks)
    passes through :func:`agentbus.redact.masked_output`.
    """
    with masked_output():
        try:
            return _main(argv)
        except Exception:
            traceback.print_exc()  # here, masked; the interpreter's own hook would not be
            return 1


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = asyncio.run(args.fn(args))
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `agentbus trace RUN | head`: the reader went away; that is not an error.
        sys.stderr.close()
        return 0
    except UsageError as exc:
        print(f"agentbus: error: {exc}", file=sys.stderr)
        return 2
    except TransportUnavailable as exc:
        print(f"agentbus: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # An AgentBusError, or whatever the user's own code raised (their app's main, a
        # handler's error reply): one line; the traceback only when asked for.
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug else " (run with --debug for the traceback)"
        message = redact_text(f"{type(exc).__name__}: {exc}")
        print(f"agentbus: error: {message}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
