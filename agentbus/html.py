"""``agentbus trace RUN --html FILE``: one self-contained page (no network fetches).

The page embeds the trace as JSON and renders three views with plain JavaScript and SVG:
a timeline with one swimlane per agent (publishes as ticks, handling as bars), a
message-sequence diagram (lifelines per agent, an arrow per delivery), and a details
panel that shows any event's full envelope, deliveries and model/tool calls on click.
"""

from __future__ import annotations

import html
import json
from typing import Any

from .inspect import Trace
from .transports import JournalRecord

__all__ = ["render_html"]


def _page_data(trace: Trace, records: list[JournalRecord]) -> dict[str, Any]:
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
    events = [
        {
            **e.to_dict(payloads=True),
            "envelope": e.envelope,
            "calls": e.calls,
            "errors": e.errors,
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
    times = [e.time for e in trace.events] + [s["end"] or s["start"] for s in spans.values()]
    return {
        "run": trace.run.to_dict(),
        "tokens": trace.tokens,
        "agents": agents,
        "events": events,
        "spans": list(spans.values()),
        "t0": min(times) if times else trace.run.started,
        "t1": max(times) if times else trace.run.started,
        "steps": trace.steps,
    }


def render_html(trace: Trace, records: list[JournalRecord]) -> str:
    """The trace as a complete HTML document."""
    data = json.dumps(_page_data(trace, records), default=str).replace("</", "<\\/")
    title = html.escape(f"agentbus trace {trace.run.name} {trace.run.run_id}")
    return _TEMPLATE.replace("__TITLE__", title).replace("__DATA__", data)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{padding:10px 16px;background:#1d2330;color:#fff}
header h1{font-size:16px;margin:0 0 4px}
header .meta span{margin-right:14px;opacity:.85}
main{display:grid;grid-template-columns:minmax(0,1fr) 420px;gap:12px;padding:12px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:8px 10px;margin-bottom:12px;overflow-x:auto}
h2{font-size:13px;margin:2px 0 8px;text-transform:uppercase;letter-spacing:.04em;color:#5a6272}
svg text{font-size:11px;fill:#1d2330}
.lane-label{font-weight:600}
.ev{cursor:pointer}
.ev:hover rect,.ev:hover circle,.ev:hover line{stroke:#000;stroke-width:2}
.selected rect,.selected circle{stroke:#e8590c!important;stroke-width:3!important}
.selected line{stroke:#e8590c!important}
#details{position:sticky;top:12px;align-self:start;max-height:calc(100vh - 24px);overflow:auto}
#details pre{background:#f1f3f5;padding:6px;border-radius:4px;white-space:pre-wrap;word-break:break-word;font-size:11px}
table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:2px 6px;border-bottom:1px solid #eef0f3;font-size:12px}
.bad{color:#c92a2a;font-weight:600}
.muted{color:#8a93a3}
#list tr{cursor:pointer}
#list tr:hover{background:#eef3ff}
</style></head>
<body>
<header><h1 id="title"></h1><div class="meta" id="meta"></div></header>
<main>
<div>
<section><h2>Timeline — one swimlane per agent</h2><svg id="timeline"></svg></section>
<section><h2>Message sequence</h2><svg id="sequence"></svg></section>
<section><h2>Events</h2><table id="list"><thead><tr><th>#</th><th>type</th><th>topic</th><th>from</th><th>handled by</th></tr></thead><tbody></tbody></table></section>
</div>
<aside id="details"><section><h2>Details</h2><div id="detail-body" class="muted">Click an event to see its envelope.</div></section></aside>
</main>
<script id="trace-data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("trace-data").textContent);
const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#4c6ef5","#12b886","#fab005","#e64980","#7950f2","#15aabf","#fd7e14","#82c91e","#be4bdb","#228be6"];
const color = a => COLORS[Math.max(0, D.agents.indexOf(a)) % COLORS.length];
function el(tag, attrs, parent, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  if (parent) parent.appendChild(n);
  return n;
}
function h(tag, text, cls) { const n = document.createElement(tag); if (text !== undefined) n.textContent = text; if (cls) n.className = cls; return n; }
const run = D.run;
document.getElementById("title").textContent = `${run.name} — run ${run.run_id}`;
const meta = document.getElementById("meta");
for (const t of [`status ${run.status}`, `${D.events.length} events`, `${D.agents.length} agents`,
                 run.duration == null ? "running" : `${run.duration.toFixed(3)} s`, `${D.tokens} tokens`]) meta.appendChild(h("span", t));

const span = Math.max(D.t1 - D.t0, 1e-3);
const LEFT = 130, WIDTH = 680;
const x = t => LEFT + (t - D.t0) / span * WIDTH;

// Timeline: lanes per agent; publishes as circles, handling as bars.
(function timeline() {
  const svg = document.getElementById("timeline"), laneH = 28;
  svg.setAttribute("width", LEFT + WIDTH + 20); svg.setAttribute("height", D.agents.length * laneH + 30);
  D.agents.forEach((a, i) => {
    el("line", {x1: LEFT, x2: LEFT + WIDTH, y1: i * laneH + 20, y2: i * laneH + 20, stroke: "#e3e6ea"}, svg);
    el("text", {x: 4, y: i * laneH + 24, class: "lane-label"}, svg, a);
  });
  for (const s of D.spans) {
    const lane = D.agents.indexOf(s.agent); if (lane < 0) continue;
    const g = el("g", {class: "ev", "data-event": s.event}, svg);
    const x0 = x(s.start), x1 = Math.max(x(s.end || s.start), x0 + 3);
    el("rect", {x: x0, y: lane * laneH + 12, width: x1 - x0, height: 16, rx: 3, fill: s.outcome === "handled" ? color(s.agent) : "#fa5252", opacity: .55}, g);
    g.addEventListener("click", () => select(s.event));
  }
  for (const e of D.events) {
    const lane = D.agents.indexOf(e.source); if (lane < 0) continue;
    const g = el("g", {class: "ev", "data-event": e.id}, svg);
    el("circle", {cx: x(e.time), cy: lane * laneH + 20, r: 5, fill: color(e.source), stroke: "#fff"}, g);
    el("title", {}, g, `#${e.index} ${e.type} → ${e.topic}`);
    g.addEventListener("click", () => select(e.id));
  }
  el("text", {x: LEFT, y: D.agents.length * laneH + 26}, svg, "0 s");
  el("text", {x: LEFT + WIDTH - 40, y: D.agents.length * laneH + 26}, svg, `${span.toFixed(3)} s`);
})();

// Sequence diagram: lifelines per agent, one arrow per (event, handler).
(function sequence() {
  const svg = document.getElementById("sequence"), colW = Math.max(110, Math.min(180, 1000 / Math.max(D.agents.length, 1)));
  const rows = [];
  for (const e of D.events) {
    const handlers = e.deliveries.map(d => d.agent);
    if (e.reply_to_agent) rows.push({e, to: e.reply_to_agent, reply: true});
    else if (handlers.length === 0) rows.push({e, to: null}); else for (const t of handlers) rows.push({e, to: t});
  }
  const rowH = 22, top = 30;
  svg.setAttribute("width", D.agents.length * colW + 40); svg.setAttribute("height", top + rows.length * rowH + 20);
  const cx = a => 20 + D.agents.indexOf(a) * colW + colW / 2;
  const defs = el("defs", {}, svg);
  const m = el("marker", {id: "arrow", markerWidth: 8, markerHeight: 8, refX: 7, refY: 4, orient: "auto"}, defs);
  el("path", {d: "M0,0 L8,4 L0,8 z", fill: "#495057"}, m);
  D.agents.forEach(a => {
    el("text", {x: cx(a), y: 16, "text-anchor": "middle", class: "lane-label"}, svg, a);
    el("line", {x1: cx(a), x2: cx(a), y1: 22, y2: top + rows.length * rowH, stroke: "#ced4da", "stroke-dasharray": "4 3"}, svg);
  });
  rows.forEach((r, i) => {
    const y = top + i * rowH + 12, g = el("g", {class: "ev", "data-event": r.e.id}, svg);
    const x1 = cx(r.e.source);
    if (r.to === null || r.to === r.e.source) {
      el("circle", {cx: x1, cy: y, r: 4, fill: color(r.e.source)}, g);
      el("text", {x: x1 + 8, y: y + 4}, g, `#${r.e.index} ${r.e.type} → ${r.e.topic}`);
    } else {
      const x2 = cx(r.to), d = r.e.deliveries.find(d => d.agent === r.to);
      const failed = d && d.outcome !== "handled" && d.outcome !== "replied";
      el("line", {x1, x2: x2 + (x2 > x1 ? -4 : 4), y1: y, y2: y, stroke: failed ? "#fa5252" : "#495057", "stroke-width": 1.5, "marker-end": "url(#arrow)", "stroke-dasharray": r.reply ? "5 3" : "none"}, g);
      el("text", {x: Math.min(x1, x2) + 6, y: y - 4}, g, `#${r.e.index} ${r.e.type}${r.reply ? " (reply)" : ""}`);
    }
    g.addEventListener("click", () => select(r.e.id));
  });
})();

// Event list.
(function list() {
  const body = document.querySelector("#list tbody");
  for (const e of D.events) {
    const tr = document.createElement("tr"); tr.dataset.event = e.id;
    const handled = e.deliveries.map(d => `${d.agent}: ${d.outcome}`).join(", ");
    for (const c of [`#${e.index}`, e.type, e.topic, e.source, handled || "—"]) tr.appendChild(h("td", c));
    if (e.errors.length) tr.classList.add("bad");
    tr.addEventListener("click", () => select(e.id));
    body.appendChild(tr);
  }
})();

function select(id) {
  const e = D.events.find(x => x.id === id); if (!e) return;
  document.querySelectorAll(".selected").forEach(n => n.classList.remove("selected"));
  document.querySelectorAll(`[data-event="${id}"]`).forEach(n => n.classList.add("selected"));
  const box = document.getElementById("detail-body"); box.className = ""; box.replaceChildren();
  box.appendChild(h("h3", `#${e.index} ${e.type}`));
  const t = document.createElement("table");
  for (const [k, v] of [["id", e.id], ["topic", e.topic], ["from", e.source], ["caused by", e.causation_id || "— (external input)"], ["correlation", e.correlation_id || "—"], ["tokens", e.tokens]]) {
    const tr = document.createElement("tr"); tr.appendChild(h("th", k)); tr.appendChild(h("td", String(v))); t.appendChild(tr);
  }
  box.appendChild(t);
  box.appendChild(h("h4", "Deliveries"));
  if (!e.deliveries.length) box.appendChild(h("div", "not delivered to any agent (a reply or an unsubscribed topic)", "muted"));
  for (const d of e.deliveries) {
    box.appendChild(h("div", `${d.agent}: ${d.outcome}` + (d.duration_ms != null ? ` in ${d.duration_ms.toFixed(1)} ms` : "") + (d.attempts > 1 ? `, ${d.attempts} attempts` : "") + (d.error ? ` — ${d.error}` : ""), d.error ? "bad" : ""));
  }
  if (e.calls.length) {
    box.appendChild(h("h4", "Model and tool calls"));
    for (const c of e.calls) {
      box.appendChild(h("div", `${c.kind.replace("_call", "")} ${c.name} (${c.duration_ms} ms)` + (c.error ? ` — ${c.error}` : ""), c.error ? "bad" : ""));
      box.appendChild(h("pre", JSON.stringify({request: c.request, response: c.response}, null, 2)));
    }
  }
  box.appendChild(h("h4", "Envelope"));
  const pre = h("pre", JSON.stringify(e.envelope, null, 2)); pre.id = "envelope"; box.appendChild(pre);
}
window.agentbusSelect = select;
</script>
</body></html>
"""
