"""``python -m benchmarks``: run the suite, print the table, write ``RESULTS.md``.

::

    python -m benchmarks                  # every scenario (a few minutes on 2 cores)
    python -m benchmarks --quick          # smaller N, same number of rounds
    python -m benchmarks --only fanout    # one scenario (comma-separated for several)
    python -m benchmarks --list           # the scenarios

A full run writes ``benchmarks/RESULTS.md``; a partial one (``--only``) writes it only
with ``--write``. Needs Redis at ``--redis-url`` (default ``redis://127.0.0.1:6379/0``);
every key lives under its own ``bench:…`` prefix and is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
import traceback
from pathlib import Path
from types import ModuleType

from . import (
    archive,
    cluster,
    fanout,
    faststream_fanout,
    footprint,
    inmemory,
    overhead,
    pipeline,
    replay,
    reqreply,
    scale,
    upcast,
)
from ._harness import DEFAULT_REDIS_URL, Outcome, Row, Settings
from ._report import command_line, document, machine, redis_version, table

SCENARIOS: dict[str, ModuleType] = {
    m.NAME: m
    for m in (
        fanout,
        pipeline,
        reqreply,
        inmemory,
        faststream_fanout,
        overhead,
        replay,
        scale,
        cluster,
        footprint,
        archive,
        upcast,
    )
}
RESULTS = Path(__file__).with_name("RESULTS.md")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller N per round (same rounds)")
    p.add_argument("--only", default="", help="comma-separated scenarios (see --list)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--n", type=int, default=None, help="messages per round for every scenario")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    p.add_argument("--output", type=Path, default=RESULTS, help="where to write the table")
    p.add_argument("--write", action="store_true", help="write the table for --only runs too")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


async def run_one(module: ModuleType, settings: Settings) -> Outcome:
    started = time.perf_counter()
    try:
        outcome: Outcome = await module.run(settings)
    except Exception as exc:  # one scenario failing must not lose the others' numbers
        traceback.print_exc()
        outcome = Outcome(module.NAME, error=f"{type(exc).__name__}: {exc}")
        outcome.rows.append(Row(module.NAME, "FAILED", "-", "-", note=str(exc)))
    outcome.seconds = time.perf_counter() - started
    return outcome


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, module in SCENARIOS.items():
            print(f"{name:12} {module.TITLE}")
        return 0
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
        return 2
    logging.basicConfig(level=logging.ERROR)
    settings = Settings(args.redis_url, args.rounds, args.quick, args.n)
    load_start = os.getloadavg()
    redis = await redis_version(settings.redis_url)
    outcomes = []
    for name in chosen:
        print(f"== {name}: {SCENARIOS[name].TITLE}", flush=True)
        outcome = await run_one(SCENARIOS[name], settings)
        outcomes.append(outcome)
        notes = "".join(f"\n- {note}" for note in outcome.notes)
        print(table(outcome.rows), notes, f"\n({outcome.seconds:.1f} s)\n", flush=True)
    rows = [r for o in outcomes for r in o.rows]
    print(table(rows))
    partial = bool(args.only)
    if not args.no_write and (args.write or not partial):
        text = document(outcomes, machine(redis, load_start), command_line(), settings.rounds)
        args.output.write_text(text, encoding="utf-8")
        print(f"\nwrote {args.output}")
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
