"""``agentbus trace RUN --html FILE``: one self-contained page (no network fetches).

The page embeds the trace as JSON and renders it with plain JavaScript (the template is in
:mod:`agentbus._trace_page`): a toolbar (text search; agent, type and status filters), the
causal tree with the coordinators' ``step`` notes interleaved where they were made, a
timeline with one swimlane per agent, a message-sequence diagram, and a details panel.
The tree and the sequence diagram are windowed (only the rows in view are in the DOM), so
a run of thousands of events keeps a bounded page height.

Every event and step in the page data carries a ``flags`` list (empty unless a reader of
the journal marks a record, e.g. as unverified); the page shows flags as badges and can
filter on them.
"""

from __future__ import annotations

import html
import json
from typing import Any

from ._trace_page import TEMPLATE
from .inspect import Trace
from .transports import JournalRecord

__all__ = ["render_html", "render_page"]


def _spans(records: list[JournalRecord]) -> list[dict[str, Any]]:
    """Handling intervals per (event, agent), from ``delivered`` to its outcome."""
    spans: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in records:
        r = rec.record
        event_id, agent = str(r.get("event_id")), str(r.get("agent"))
        if rec.kind == "delivered":
            spans[(event_id, agent)] = {
                "event": event_id,
                "agent": agent,
                "start": r["time"],
                "end": None,
                "outcome": "delivered",
            }
        elif rec.kind in ("handled", "failed", "dead_lettered") and (event_id, agent) in spans:
            span = spans[(event_id, agent)]
            span["end"] = r["time"]
            span["outcome"] = rec.kind
    return list(spans.values())


def _page_data(trace: Trace, records: list[JournalRecord]) -> dict[str, Any]:
    spans = _spans(records)
    # The payload travels once, inside the envelope (to_dict(payloads=True) would copy it).
    events = [
        {
            **e.to_dict(),
            "envelope": e.envelope,
            "calls": e.calls,
            "errors": e.errors,
            # Journal records of this event that fail signature verification (trace
            # with signing keys): badges, and the "flagged" status filter.
            "flags": [f"unverified: {note}" for note in e.unverified],
        }
        for e in trace.events
    ]
    # A reply goes to whoever sent the request with the same correlation id.
    requesters = {
        e.correlation_id: e.source
        for e in trace.events
        if e.envelope.get("replyto") and e.correlation_id
    }
    for ev in events:
        if str(ev["topic"]).startswith("_inbox.") and ev.get("correlation_id") in requesters:
            ev["reply_to_agent"] = requesters[ev["correlation_id"]]
    agents: list[str] = []
    for e in trace.events:
        for name in [e.source, *(d.agent for d in e.deliveries.values())]:
            if name not in agents:
                agents.append(name)
    for st in trace.steps:
        agent = str(st.get("agent"))
        if agent not in agents:
            agents.append(agent)
    steps = [{**st, "flags": list(st.get("flags") or [])} for st in trace.steps]
    times = [e.time for e in trace.events] + [s["end"] or s["start"] for s in spans]
    return {
        "run": trace.run.to_dict(),
        "tokens": trace.tokens,
        "agents": agents,
        "events": events,
        "spans": spans,
        "t0": min(times) if times else trace.run.started,
        "t1": max(times) if times else trace.run.started,
        "steps": steps,
        "signatures": trace.signatures,
    }


def render_html(trace: Trace, records: list[JournalRecord]) -> str:
    """The trace as a complete HTML document."""
    return render_page(_page_data(trace, records))


def render_page(data: dict[str, Any]) -> str:
    """A page for already-built page data (``render_html`` builds it from a trace)."""
    # "<" only occurs inside JSON strings, where \u003c means the same: no "</script>" or "<!--".
    payload = json.dumps(data, default=str, separators=(",", ":")).replace("<", "\\u003c")
    run = data["run"]
    title = html.escape(f"agentbus trace {run.get('name')} {run.get('run_id')}")
    # Split first: a run name holding "__DATA__" must not become a place for the data.
    head, tail = TEMPLATE.split("__DATA__")
    return head.replace("__TITLE__", title) + payload + tail
