"""Inspection commands: ``agentbus trace`` (causal tree, timeline or JSON)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from .inspect import build_trace, render_tree
from .journal import Journal

__all__ = ["register"]


async def cmd_trace(args: argparse.Namespace) -> int:
    async with Journal.open(args.url) as journal:
        info = await journal.run(args.run)
        records = await journal.records(info.run_id)
    trace = build_trace(info, records)
    trace = trace.filtered(agent=args.agent, type_=args.type, topic=args.topic)
    if args.json:
        print(json.dumps(trace.to_dict(payloads=args.show_payloads), indent=2, default=str))
    else:
        print(render_tree(trace, payloads=args.show_payloads))
    return 0


def register(
    sub: Any, with_url: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
) -> None:
    p = with_url(sub.add_parser("trace", help="a run's events as a causal tree"))
    p.add_argument("run", help="run id (or a unique prefix)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--show-payloads", action="store_true", help="include each event's data")
    p.add_argument("--agent", help="only events sent or handled by this agent")
    p.add_argument("--type", help="only events of this message type")
    p.add_argument("--topic", help="only events on this topic")
    p.set_defaults(fn=cmd_trace)
