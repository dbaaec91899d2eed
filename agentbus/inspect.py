"""Turn a run's journal into a trace: events, their deliveries, and the causal tree.

The tree follows ``causationid``: an event's children are the events published while
it was being handled. Each node carries the delivery outcomes per agent (handled,
failed, dead-lettered, with durations and attempts), external calls and tokens.

With a signer, every record's signature is checked (:meth:`Signer.verify_record`):
records that fail (unsigned, altered, forged or moved from another run) are listed in
``Trace.signatures`` and flagged on the events they describe.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .budget import budget_report, describe
from .records import RESUMED_PUBLISH_STEP, RESUMED_STEP
from .signing import Signer, unverified_records
from .transports import JournalRecord, RunInfo

__all__ = ["Delivery", "Trace", "TraceEvent", "build_trace", "render_timeline", "render_tree"]

_OUTCOMES = (
    "handled",
    "failed",
    "retried",
    "dead_lettered",
    "ignored",
    "duplicate",
    "replied",
    "parked",
)
#: The records of a question to a person (``ctx.ask_human``), shown on the event handled.
_QUESTIONS = ("question_asked", "question_answered", "question_timed_out", "question_withdrawn")


@dataclass
class Delivery:
    """What one agent did with one event.

    A shared subscription's delivery is the agent's (one, whichever replica took it);
    a broadcast one's is a replica's: ``group`` names its per-instance group and
    ``consumer`` the replica, so every replica's delivery is listed.
    """

    agent: str
    outcome: str = "delivered"
    attempts: int = 0
    duration_ms: float | None = None
    error: str | None = None
    consumer: str | None = None
    group: str | None = None
    #: Calls answered from the journal after a crash (the crashed attempt had made them).
    resumed: int = 0
    #: What a resume after a crash took from the journal: ``calls`` (answered),
    #: ``requests`` (not sent again: replies from the journal), ``events`` (not published
    #: again), each counted.
    resumed_from_journal: dict[str, int] = field(default_factory=dict)
    #: How often it was parked waiting for a person's answer (``ctx.ask_human``).
    parked: int = 0


@dataclass
class TraceEvent:
    """A published event with everything the journal says about it."""

    index: int
    id: str
    type: str
    topic: str
    source: str
    time: float
    causation_id: str | None
    correlation_id: str | None
    envelope: dict[str, Any]
    deliveries: dict[str, Delivery] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    children: list[TraceEvent] = field(default_factory=list)
    #: "kind: reason" for each record about this event that fails signature verification.
    unverified: list[str] = field(default_factory=list)
    #: Questions to people asked while handling it, and how they ended (their records).
    questions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(_tokens(c) for c in self.calls)

    def labelled(self) -> list[tuple[str, Delivery]]:
        """Deliveries with a display name: the agent, or ``agent@consumer`` where several
        replicas of one agent each received the event (broadcast)."""
        counts: dict[str, int] = {}
        for d in self.deliveries.values():
            counts[d.agent] = counts.get(d.agent, 0) + 1
        return [
            (f"{d.agent}@{d.consumer}" if counts[d.agent] > 1 and d.consumer else d.agent, d)
            for d in self.deliveries.values()
        ]

    @property
    def errors(self) -> list[str]:
        out = [d.error for d in self.deliveries.values() if d.error]
        out += [str(c["error"]) for c in self.calls if c.get("error")]
        return out

    def to_dict(self, *, payloads: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "id": self.id,
            "type": self.type,
            "topic": self.topic,
            "source": self.source,
            "time": self.time,
            "causation_id": self.causation_id,
            "correlation_id": self.correlation_id,
            "deliveries": [{**vars(d), "label": label} for label, d in self.labelled()],
            "calls": [
                {k: v for k, v in c.items() if payloads or k not in ("request", "response")}
                for c in self.calls
            ],
            "tokens": self.tokens,
            "unverified": self.unverified,
            "questions": self.questions,
        }
        if payloads:
            out["data"] = self.envelope.get("data")
        return out


def _tokens(call: dict[str, Any]) -> int:
    if call.get("resumed"):
        return 0  # paid by the crashed attempt, whose record of the call counts them
    usage = (call.get("response") or {}).get("usage") or {}
    return int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))


@dataclass
class Trace:
    """A run as events (in publish order) plus the roots of the causal tree."""

    run: RunInfo
    events: list[TraceEvent]
    roots: list[TraceEvent]
    steps: list[dict[str, Any]]
    orphan_records: list[dict[str, Any]]
    #: ``None`` when signatures were not checked (no signer); else ``records`` (how
    #: many were checked) and ``unverified`` (``seq``, ``kind``, ``event_id``, ``reason``
    #: of each record that fails).
    signatures: dict[str, Any] | None = None
    #: A budgeted run's spend against its limits (:func:`~agentbus.budget.budget_report`).
    budget: dict[str, Any] | None = None

    @property
    def tokens(self) -> int:
        return sum(e.tokens for e in self.events)

    def by_agent(self) -> dict[str, dict[str, float]]:
        """Per agent: events handled, failures, total and max handler time (ms), tokens."""
        stats: dict[str, dict[str, float]] = {}
        for e in self.events:
            for d in e.deliveries.values():
                s = stats.setdefault(
                    d.agent,
                    {"handled": 0, "failed": 0, "total_ms": 0.0, "max_ms": 0.0, "tokens": 0},
                )
                if d.outcome in ("handled", "replied"):
                    s["handled"] += 1
                if d.outcome in ("failed", "dead_lettered"):
                    s["failed"] += 1
                if d.duration_ms:
                    s["total_ms"] += d.duration_ms
                    s["max_ms"] = max(s["max_ms"], d.duration_ms)
            for c in e.calls:
                agent = str(c.get("agent") or "?")
                stats.setdefault(
                    agent, {"handled": 0, "failed": 0, "total_ms": 0.0, "max_ms": 0.0, "tokens": 0}
                )
                stats[agent]["tokens"] += _tokens(c)
        return stats

    def filtered(
        self, *, agent: str | None = None, type_: str | None = None, topic: str | None = None
    ) -> Trace:
        """Only events matching every given filter (the tree is re-rooted accordingly)."""
        if not (agent or type_ or topic):
            return self
        keep = [
            e
            for e in self.events
            if (
                agent is None
                or e.source == agent
                or any(d.agent == agent for d in e.deliveries.values())
            )
            and (type_ is None or e.type == type_)
            and (topic is None or e.topic == topic)
        ]
        return _assemble(self.run, keep, self.steps, self.orphan_records, self.signatures)

    def to_dict(self, *, payloads: bool = False) -> dict[str, Any]:
        def node(e: TraceEvent) -> dict[str, Any]:
            return {**e.to_dict(payloads=payloads), "children": [node(c) for c in e.children]}

        return {
            "run": self.run.to_dict(),
            "trace_id": _trace_id(self),
            "tokens": self.tokens,
            "budget": self.budget,
            "events": len(self.events),
            "agents": self.by_agent(),
            "tree": [node(r) for r in self.roots],
            "steps": self.steps,
            "unattached": self.orphan_records,
            "signatures": self.signatures,
        }


def build_trace(
    run: RunInfo,
    records: Iterable[JournalRecord],
    *,
    signer: Signer | None = None,
    stored: Iterable[JournalRecord] | None = None,
) -> Trace:
    """Fold a run's journal records into a :class:`Trace`.

    With ``signer``, records whose signature fails are flagged (see the module doc).
    ``stored`` are the records as read, when ``records`` were changed for showing
    (secrets masked): signatures are checked on them, by ``seq``.
    """
    records = list(records)
    events: list[TraceEvent] = []
    by_id: dict[str, TraceEvent] = {}
    steps: list[dict[str, Any]] = []
    orphans: list[dict[str, Any]] = []
    signatures: dict[str, Any] | None = None
    failed: dict[str, str] = {}
    if signer is not None:
        failed = unverified_records(signer, run.run_id, records if stored is None else stored)
        signatures = {"records": len(records), "unverified": []}
    for rec in records:
        r = rec.record
        kind = r.get("kind")
        note = _flag(signatures, rec, failed[rec.seq]) if rec.seq in failed else None
        if kind == "published":
            env = r.get("event") or {}
            ev = TraceEvent(
                index=len(events),
                id=str(env.get("id")),
                type=str(env.get("type")),
                topic=str(r.get("topic") or env.get("topic")),
                source=str(env.get("source")),
                time=float(r.get("time", 0.0)),
                causation_id=env.get("causationid"),
                correlation_id=env.get("correlationid"),
                envelope=env,
            )
            if note is not None:
                ev.unverified.append(note)
            events.append(ev)
            by_id[ev.id] = ev
            continue
        if kind == "step":
            steps.append(r)
            resumed = _RESUMED.get(str(r.get("step")))
            if resumed is not None and str(r.get("event_id")) in by_id:
                _resumed_by(by_id[str(r.get("event_id"))], str(r.get("agent")), resumed)
            continue
        target = by_id.get(str(r.get("event_id")))
        if note is not None and target is not None:
            target.unverified.append(note)
        if kind in ("model_call", "tool_call"):
            if target is not None:
                target.calls.append(r)
                if r.get("resumed"):
                    _resumed_by(target, str(r.get("agent")))
            else:
                orphans.append(r)
            continue
        if kind in ("run_started", "run_finished"):
            continue
        if kind in _QUESTIONS and target is not None:
            target.questions.append(r)
            continue
        if target is None:
            orphans.append(r)
            continue
        agent = str(r.get("agent"))
        group = r.get("group")  # set for broadcast: one delivery per replica
        d = target.deliveries.get(group or agent)
        if d is None:
            d = target.deliveries[group or agent] = Delivery(agent, group=group)
        if r.get("consumer"):
            d.consumer = r["consumer"]  # the last replica that took it (a claim moves it)
        if kind == "parked":
            d.parked += 1
        if kind == "delivered":
            d.attempts = max(d.attempts, int(r.get("attempt", 1)))
        elif kind in _OUTCOMES:
            if kind != "replied" or d.outcome == "delivered":
                d.outcome = kind if kind != "retried" else "retrying"
            if "attempt" in r:
                d.attempts = max(d.attempts, int(r["attempt"]))
            if r.get("duration_ms") is not None and kind in ("handled", "failed"):
                d.duration_ms = float(r["duration_ms"])
            if r.get("error"):
                d.error = str(r["error"])
            if kind == "handled":
                d.error = None
    trace = _assemble(run, events, steps, orphans, signatures)
    trace.budget = budget_report(run.meta, records)
    return trace


#: The ``step`` records of what a resume took from the journal, and what they count.
_RESUMED = {RESUMED_STEP: "requests", RESUMED_PUBLISH_STEP: "events"}


def _resumed_by(target: TraceEvent, agent: str, what: str = "calls") -> None:
    """Count a resumed call (or request, or event) on ``agent``'s delivery of ``target``
    (its ``delivered`` record came first: a call is made while handling)."""
    for d in target.deliveries.values():
        if d.agent == agent:
            break
    else:
        d = target.deliveries[agent] = Delivery(agent)
    d.resumed_from_journal[what] = d.resumed_from_journal.get(what, 0) + 1
    if what == "calls":
        d.resumed += 1


def _resumed_text(d: Delivery) -> str:
    """`` resumed 2 calls and 3 requests from the journal`` (empty when none)."""
    parts = [f"{n} {what}" for what, n in d.resumed_from_journal.items() if n]
    return f" resumed {' and '.join(parts)} from the journal" if parts else ""


def _flag(signatures: dict[str, Any] | None, rec: JournalRecord, reason: str) -> str:
    """List a record that fails verification; the note to show on its event."""
    r = rec.record
    event = r.get("event")
    event_id = event.get("id") if isinstance(event, dict) else r.get("event_id")
    assert signatures is not None
    signatures["unverified"].append(
        {"seq": rec.seq, "kind": rec.kind, "event_id": event_id, "reason": reason}
    )
    return f"{rec.kind} record: {reason}"


def _assemble(
    run: RunInfo,
    events: list[TraceEvent],
    steps: list[dict[str, Any]],
    orphans: list[dict[str, Any]],
    signatures: dict[str, Any] | None = None,
) -> Trace:
    ids = {e.id for e in events}
    for e in events:
        e.children = []
    roots: list[TraceEvent] = []
    index = {e.id: e for e in events}
    for e in events:
        parent = index.get(e.causation_id) if e.causation_id in ids else None
        (parent.children if parent is not None else roots).append(e)
    return Trace(run, events, roots, steps, orphans, signatures)


def render_tree(trace: Trace, *, payloads: bool = False) -> str:
    """The trace as an indented causal tree for the terminal."""
    run = trace.run
    duration = "-" if run.duration is None else f"{run.duration:.3f}s"
    lines = [
        f"run {run.run_id}  {run.name}  {run.status}  events={len(trace.events)}  "
        f"duration={duration}  tokens={trace.tokens}"
    ]
    steps_by_event: dict[str, list[dict[str, Any]]] = {}
    for st in trace.steps:
        steps_by_event.setdefault(str(st.get("event_id")), []).append(st)
    if trace.budget is not None:
        over = trace.budget.get("exceeded")
        lines.append(f"budget {describe(trace.budget)}" + (f"  EXCEEDED: {over}" if over else ""))
    trace_id = _trace_id(trace)
    if trace_id:
        lines.append(f"trace id {trace_id}")
    lines.extend(_signature_lines(trace))

    def walk(e: TraceEvent, prefix: str, last: bool) -> None:
        branch = "└─ " if last else "├─ "
        flag = "  ⚠ UNVERIFIED" if e.unverified else ""
        lines.append(f"{prefix}{branch}#{e.index} {e.type} → {e.topic}  from {e.source}{flag}")
        child_prefix = prefix + ("   " if last else "│  ")
        for note in e.unverified:
            lines.append(f"{child_prefix}   ⚠ unverified {note}")
        for label, d in e.labelled():
            took = "" if d.duration_ms is None else f" {d.duration_ms:.1f}ms"
            tries = f" attempts={d.attempts}" if d.attempts > 1 else ""
            resumed = _resumed_text(d)
            if d.parked:
                resumed = f" parked {d.parked}x for an answer" + resumed
            err = f"  ! {d.error}" if d.error else ""
            lines.append(f"{child_prefix}   · {label}: {d.outcome}{took}{tries}{resumed}{err}")
        for st in steps_by_event.get(e.id, []):
            details = ", ".join(
                f"{k}={v}"
                for k, v in st.items()
                if k not in ("kind", "time", "step", "agent", "event_id")
                and not isinstance(v, dict | list)
            )
            lines.append(f"{child_prefix}   ✎ {st.get('agent')}: {st.get('step')}  {details}"[:200])
        for q in e.questions:
            lines.append(f"{child_prefix}   ? {_question_line(q)}"[:200])
        for c in e.calls:
            kind = "model" if c.get("kind") == "model_call" else "tool"
            tok = _tokens(c)
            extra = f" tokens={tok}" if tok else ""
            err = f"  ! {c['error']}" if c.get("error") else ""
            took = "resumed" if c.get("resumed") else f"{float(c.get('duration_ms', 0)):.1f}ms"
            lines.append(f"{child_prefix}   ⚙ {kind} {c.get('name')} {took}{extra}{err}")
        if payloads:
            import json

            lines.append(
                f"{child_prefix}   data: {json.dumps(e.envelope.get('data'), default=str)}"
            )
        for i, child in enumerate(e.children):
            walk(child, child_prefix, i == len(e.children) - 1)

    for i, root in enumerate(trace.roots):
        walk(root, "", i == len(trace.roots) - 1)
    if trace.orphan_records:
        lines.append(f"({len(trace.orphan_records)} records not attached to a recorded event)")
    stats = trace.by_agent()
    if stats:
        lines.append("")
        lines.append(
            f"{'AGENT':<24}{'HANDLED':>8}{'FAILED':>8}{'TOTAL MS':>11}{'MAX MS':>10}{'TOKENS':>9}"
        )
        for agent, s in sorted(stats.items()):
            lines.append(
                f"{agent:<24}{int(s['handled']):>8}{int(s['failed']):>8}"
                f"{s['total_ms']:>11.1f}{s['max_ms']:>10.1f}{int(s['tokens']):>9}"
            )
    return "\n".join(lines)


def _question_line(q: dict[str, Any]) -> str:
    """One line of a question's story: asked (what, deadline), answered (what, by whom),
    timed out, withdrawn."""
    import json

    qid, kind = q.get("question_id"), q.get("kind")
    replayed = " (from the recording)" if q.get("substituted") else ""
    if kind == "question_asked":
        deadline = q.get("deadline")
        until = (
            ""
            if not isinstance(deadline, int | float)
            else "  deadline " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(deadline))
        )
        summary = q.get("summary") or json.dumps(q.get("question"), default=str)
        return (
            f"{q.get('agent')} asked {qid} ({q.get('question_type')}): {summary}{until}{replayed}"
        )
    if kind == "question_answered":
        answer = json.dumps(q.get("answer"), default=str)
        by = f" by {q['by']}" if q.get("by") else ""
        return f"{qid} answered{by}: {answer}{replayed}"
    if kind == "question_timed_out":
        return f"{qid} timed out unanswered{replayed}"
    return f"{qid} withdrawn by {q.get('by')}"


def render_timeline(trace: Trace) -> str:
    """The run's events in publish order with their offset from the first one."""
    if not trace.events:
        return f"run {trace.run.run_id}: no events"
    t0 = trace.events[0].time
    lines = [f"run {trace.run.run_id}  {trace.run.name}  {trace.run.status}"]
    lines.extend(_signature_lines(trace))
    for e in sorted(trace.events, key=lambda e: (e.time, e.index)):
        outcomes = ", ".join(f"{label}:{d.outcome}" for label, d in e.labelled()) or "-"
        flag = "  ⚠ UNVERIFIED" if e.unverified else ""
        lines.append(
            f"+{(e.time - t0) * 1000:9.1f}ms  #{e.index:<4} {e.source:>14} → {e.topic:<24} "
            f"{e.type:<28} {outcomes}{flag}"
        )
    return "\n".join(lines)


def _signature_lines(trace: Trace) -> list[str]:
    sigs = trace.signatures
    if sigs is None:
        return []
    bad = sigs["unverified"]
    if not bad:
        return [f"signatures: all {sigs['records']} journal records verified"]
    lines = [
        f"⚠ {len(bad)} of {sigs['records']} journal records FAIL signature verification "
        "(unsigned, altered, forged or from another run):"
    ]
    for b in bad[:20]:
        lines.append(f"  ⚠ record {b['seq']} {b['kind']} event={b['event_id']}: {b['reason']}")
    if len(bad) > 20:
        lines.append(f"  … and {len(bad) - 20} more (see --json)")
    return lines


def _trace_id(trace: Trace) -> str | None:
    for e in trace.events:
        tp = e.envelope.get("traceparent")
        if isinstance(tp, str) and tp.count("-") == 3:
            return tp.split("-")[1]
    return None
