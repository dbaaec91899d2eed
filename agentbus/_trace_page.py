"""The HTML trace page: inline CSS and JavaScript, no network, no build step.

``__TITLE__`` and ``__DATA__`` (the page data of :mod:`agentbus.html`) are filled in.
The tree and the sequence diagram are windowed: they hold a spacer as tall as all their
rows and put only the rows in view (plus a margin) into the DOM, re-rendered on scroll,
so the DOM and the page height stay bounded however long the run.
"""

from __future__ import annotations

__all__ = ["TEMPLATE"]

_CSS = """
body{font:13px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{padding:10px 16px;background:#1d2330;color:#fff}
header h1{font-size:16px;margin:0 0 4px}
header .meta span{margin-right:14px;opacity:.85}
#toolbar{position:sticky;top:0;z-index:5;display:flex;flex-wrap:wrap;gap:8px;align-items:center;padding:8px 16px;background:#fff;border-bottom:1px solid #dde1e7}
#toolbar input[type=search]{width:260px;padding:4px 6px}
#toolbar select,#toolbar button{padding:3px 6px}
#count{color:#5a6272;margin-left:auto}
main{display:grid;grid-template-columns:minmax(0,1fr) 400px;gap:12px;padding:12px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:8px 10px;margin-bottom:12px;overflow-x:auto}
h2{font-size:13px;margin:2px 0 8px;text-transform:uppercase;letter-spacing:.04em;color:#5a6272}
.vscroll{position:relative;overflow:auto;border-top:1px solid #eef0f3}
#tree-inner{position:relative;min-width:100%}
.row{position:absolute;left:0;right:0;height:22px;line-height:22px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;cursor:pointer;box-sizing:border-box;padding-right:6px}
.row:hover{background:#eef3ff}
.row.selected{background:#fff1e6;outline:1px solid #e8590c}
.row.ctx{opacity:.5}
.row.step{color:#5f3dc4}
.row .tog{display:inline-block;width:14px;color:#5a6272}
.row .idx{color:#8a93a3;margin-right:4px}
.row .ty{font-weight:600;margin-right:4px}
.row .to,.row .from{color:#5a6272;margin-right:6px}
.row .dot{display:inline-block;width:8px;height:8px;border-radius:4px;margin:0 4px 0 2px}
.row .sn{font-weight:600;margin:0 6px 0 2px}
.b{display:inline-block;padding:0 5px;margin-right:3px;border-radius:8px;font-size:11px;line-height:16px;background:#e9ecef;color:#343a40}
.b.ok{background:#d3f9d8;color:#2b8a3e}.b.bad{background:#ffe3e3;color:#c92a2a}.b.warn{background:#fff3bf;color:#e67700}
.b.flag{background:#343a40;color:#fff}
svg text{font-size:11px;fill:#1d2330}
.lane-label{font-weight:600}
.ev{cursor:pointer}
.ev.dim{opacity:.12}
.ev:hover rect,.ev:hover circle,.ev:hover line{stroke:#000;stroke-width:2}
.selected rect,.selected circle{stroke:#e8590c!important;stroke-width:3!important}
.selected line{stroke:#e8590c!important}
#details{position:sticky;top:52px;align-self:start;max-height:calc(100vh - 64px);overflow:auto}
#details pre{background:#f1f3f5;padding:6px;border-radius:4px;white-space:pre-wrap;word-break:break-word;font-size:11px}
#details a{color:#364fc7;cursor:pointer;text-decoration:underline}
table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:2px 6px;border-bottom:1px solid #eef0f3;font-size:12px;vertical-align:top}
.bad{color:#c92a2a;font-weight:600}
.muted{color:#8a93a3}
.stepline{color:#5f3dc4;margin:2px 0}
"""

_HTML = """
<header><h1 id="title"></h1><div class="meta" id="meta"></div></header>
<div id="toolbar">
<input id="q" type="search" placeholder="search events, payloads, steps..." aria-label="search">
<select id="f-agent" aria-label="agent"><option value="">all agents</option></select>
<select id="f-type" aria-label="type"><option value="">all types</option></select>
<select id="f-status" aria-label="status"><option value="">any status</option></select>
<label><input id="f-steps" type="checkbox" checked> coordination steps</label>
<button id="expand-all" type="button">expand all</button>
<button id="collapse-all" type="button">collapse all</button>
<span id="count"></span>
</div>
<main>
<div>
<section><h2>Causal tree — events and the coordinators' steps</h2><div id="tree" class="vscroll"><div id="tree-inner"></div></div></section>
<section><h2>Timeline — one swimlane per agent</h2><svg id="timeline"></svg></section>
<section><h2>Message sequence</h2><svg id="seq-head"></svg><div id="seq-box" class="vscroll"><svg id="sequence"><g id="seq-lines"></g><g id="seq-rows"></g></svg></div></section>
</div>
<aside id="details"><section><h2>Details</h2><div id="detail-body" class="muted">Click an event or a step to see it in full.</div></section></aside>
</main>
"""

_JS = r"""
"use strict";
const D = JSON.parse(document.getElementById("trace-data").textContent);
const NS = "http://www.w3.org/2000/svg";
const ROW_H = 22, SEQ_H = 22, MARGIN = 12;
// Small runs open fully; in bigger ones only the first levels start open.
const OPEN_ALL_UPTO = 150, OPEN_DEPTH = 1;
const COLORS = ["#4c6ef5","#12b886","#fab005","#e64980","#7950f2","#15aabf","#fd7e14","#82c91e","#be4bdb","#228be6"];
const color = a => COLORS[Math.max(0, D.agents.indexOf(a)) % COLORS.length];
const $ = id => document.getElementById(id);
function el(tag, attrs, parent, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  if (parent) parent.appendChild(n);
  return n;
}
function h(tag, text, cls) { const n = document.createElement(tag); if (text !== undefined) n.textContent = text; if (cls) n.className = cls; return n; }

// ---- model: events in a causal tree, steps under the event they were made while handling
const byId = new Map();
for (const e of D.events) { e.kind = "event"; e.kids = []; e.steps = []; e.flags = e.flags || []; byId.set(e.id, e); }
const roots = [];
for (const e of D.events) {
  const p = e.causation_id == null ? undefined : byId.get(e.causation_id);
  e.parent = p && p.index < e.index ? p : null;  // a cause precedes its effect: no cycles
  (e.parent ? e.parent.kids : roots).push(e);
}
const loose = [];
D.steps.forEach((s, i) => {
  s.kind = "step"; s.sid = i; s.flags = s.flags || [];
  s.owner = byId.get(String(s.event_id)) || null;
  (s.owner ? s.owner.steps : loose).push(s);
});
const byTime = (a, b) => a.time - b.time;
for (const e of D.events) e.items = [...e.steps, ...e.kids].sort(byTime);
const TOP = [...loose, ...roots].sort(byTime);
(function depths() {
  const stack = TOP.map(n => [n, 0]);
  while (stack.length) { const [n, d] = stack.pop(); n.depth = d; if (n.items) for (const c of n.items) stack.push([c, d + 1]); }
})();

const SKIP = new Set(["kind", "time", "step", "agent", "event_id", "pattern", "flags", "sid", "owner", "depth", "_t"]);
function fmt(v) {
  if (v == null) return "—";
  if (Array.isArray(v)) return "[" + v.map(fmt).join(", ") + "]";
  if (typeof v === "object") return "(" + Object.entries(v).map(([k, x]) => `${k} ${fmt(x)}`).join(", ") + ")";
  return String(v);
}
const list = (xs, f) => (Array.isArray(xs) ? xs : []).map(f).join("; ");
// Readable lines for the patterns' main decisions; any other step shows its fields.
const STEP_TEXT = {
  "awarded": s => `${s.task} to ${s.winner} for ${s.price} (${s.strategy}): ${s.reason}` + (s.losers && s.losers.length ? `; over ${s.losers.join(", ")}` : ""),
  "chose": s => `round ${s.round}: ${s.source} — eligible: ` + list(s.eligible, x => `${x.source} (priority ${x.priority}: ${x.reason})`),
  "ow.planned": s => `${s.job_id}: ${(s.tasks || []).length} tasks — ` + list(s.tasks, t => t.title),
  "hier.routed": s => `${s.job_id}: ` + list(s.delegations, d => `${d.child} gets "${d.goal}"`),
  "ow.dispatched": s => `${s.job_id} task ${s.index} "${s.title}" (attempt ${s.attempt})`,
  "bids-collected": s => `${s.task}: bids ${fmt(s.bids)}` + (s.declined && Object.keys(s.declined).length ? `, declined ${fmt(s.declined)}` : ""),
};
function stepSummary(s) {
  if (s._sum !== undefined) return s._sum;
  let out = null;
  try { if (STEP_TEXT[s.step]) out = STEP_TEXT[s.step](s); } catch (err) { out = null; }
  if (out === null || out.includes("undefined")) {
    const keys = Object.keys(s).filter(k => !SKIP.has(k) && k !== "_sum" && k !== "reason");
    out = keys.map(k => `${k}=${fmt(s[k])}`).join(" ") + (s.reason != null ? ` — reason: ${fmt(s.reason)}` : "");
  }
  return (s._sum = out);
}
const evText = e => e._t ??= [`#${e.index}`, e.id, e.type, e.topic, e.source, e.correlation_id || "",
  ...e.deliveries.map(d => `${d.agent} ${d.outcome} ${d.error || ""}`), ...e.errors, ...e.flags,
  JSON.stringify(e.envelope.data ?? null)].join(" ").toLowerCase();
const stepText = s => s._t ??= [s.agent, s.step, stepSummary(s), ...s.flags].join(" ").toLowerCase();

// ---- filters
const F = {q: "", agent: "", type: "", status: "", steps: true};
const filtering = () => !!(F.q || F.agent || F.type || F.status);
const stepType = () => F.type.startsWith("step:") ? F.type.slice(5) : null;
const involves = (e, a) => e.source === a || e.deliveries.some(d => d.agent === a) || e.steps.some(s => s.agent === a);
function statusOk(e) {
  if (F.status === "error") return e.errors.length > 0;
  if (F.status === "flagged") return e.flags.length > 0 || e.steps.some(s => s.flags.length > 0);
  return e.deliveries.some(d => d.outcome === F.status);
}
function eventHit(e) {
  const st = stepType();
  if (F.agent && !involves(e, F.agent)) return false;
  if (F.type && (st ? !e.steps.some(s => s.step === st) : e.type !== F.type)) return false;
  if (F.status && !statusOk(e)) return false;
  if (F.q && !evText(e).includes(F.q) && !e.steps.some(s => stepText(s).includes(F.q))) return false;
  return true;
}
function stepHit(s) {
  const st = stepType(), o = s.owner;
  if (F.agent && s.agent !== F.agent && !(o && involves(o, F.agent))) return false;
  if (F.type && (st ? s.step !== st : !(o && o.type === F.type))) return false;
  if (F.status && (F.status === "flagged" ? !s.flags.length : !(o && statusOk(o)))) return false;
  if (F.q && !stepText(s).includes(F.q) && !(o && evText(o).includes(F.q))) return false;
  return true;
}

// ---- tree rows (flattened, windowed)
const openSet = new Set(D.events.length <= OPEN_ALL_UPTO ? D.events : D.events.filter(e => e.depth < OPEN_DEPTH));
let closedWhileFiltering = new Set();
let ROWS = [], HITS = null, SHOWN = null, selected = null;

function childrenOf(n) {
  if (n.kind !== "event") return [];
  return n.items.filter(c => c.kind === "step"
    ? F.steps && (!HITS || (HITS.has(c.owner) && stepHit(c)))
    : !SHOWN || SHOWN.has(c));
}
function isOpen(n) { return HITS ? !closedWhileFiltering.has(n) : openSet.has(n); }
function rebuild() {
  HITS = SHOWN = null;
  if (filtering()) {
    HITS = new Set(D.events.filter(eventHit));
    SHOWN = new Set();
    for (const e of HITS) for (let n = e; n && !SHOWN.has(n); n = n.parent) SHOWN.add(n);
  }
  const top = TOP.filter(c => c.kind === "step" ? F.steps && (!HITS || stepHit(c)) : (!SHOWN || SHOWN.has(c)));
  ROWS = [];
  const stack = top.map(n => [n, 0]).reverse();
  while (stack.length) {
    const [n, depth] = stack.pop();
    const kids = childrenOf(n), open = kids.length > 0 && isOpen(n);
    ROWS.push({n, depth, kids: kids.length, open, hit: !HITS || n.kind === "step" || HITS.has(n)});
    if (open) for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
  }
  const box = $("tree"), inner = $("tree-inner");
  inner.style.height = ROWS.length * ROW_H + "px";
  inner.dataset.rows = ROWS.length;
  box.style.height = Math.min(ROWS.length * ROW_H + 4, Math.max(320, Math.round(innerHeight * 0.6))) + "px";
  $("count").textContent = HITS
    ? `${HITS.size} of ${D.events.length} events match`
    : `${D.events.length} events, ${D.steps.length} steps`;
  renderTree();
  dimTimeline();
  buildSequence();
}

function outcomeClass(o) {
  if (o === "handled" || o === "replied") return "b ok";
  if (o === "failed" || o === "dead_lettered") return "b bad";
  if (o === "retrying") return "b warn";
  return "b";
}
function rowEl(r, i) {
  const n = r.n, div = h("div", undefined, `row ${n.kind}` + (r.hit ? "" : " ctx") + (selected === n ? " selected" : ""));
  const add = (text, cls) => { const s = div.appendChild(h("span", text, cls)); div.appendChild(document.createTextNode(" ")); return s; };
  div.style.top = i * ROW_H + "px";
  div.style.paddingLeft = 4 + r.depth * 16 + "px";
  add(r.kids ? (r.open ? "▾" : "▸") : "", "tog");
  if (r.kids) { div.dataset.kids = r.kids; div.dataset.open = r.open; }
  if (n.kind === "event") {
    div.dataset.event = n.id;
    add(`#${n.index}`, "idx");
    add(n.type, "ty");
    add(`→ ${n.topic}`, "to");
    add(undefined, "dot").style.background = color(n.source);
    add(`from ${n.source}`, "from");
    for (const d of n.deliveries) add(`${d.label || d.agent}: ${d.outcome}` + (d.attempts > 1 ? `, ${d.attempts} attempts` : "") + (d.resumed ? `, resumed ${d.resumed} calls` : ""), outcomeClass(d.outcome));
    if (n.errors.length) add(`! ${n.errors[0]}`, "bad");
  } else {
    div.dataset.step = n.sid;
    add(`✎ ${n.agent}`);
    add(n.step, "sn");
    add(stepSummary(n));
  }
  for (const f of n.flags) add(f, "b flag");
  div.title = div.textContent;
  return div;
}
function renderTree() {
  const box = $("tree"), top = box.scrollTop;
  const first = Math.max(0, Math.floor(top / ROW_H) - MARGIN);
  const last = Math.min(ROWS.length, Math.ceil((top + box.clientHeight) / ROW_H) + MARGIN);
  const frag = document.createDocumentFragment();
  for (let i = first; i < last; i++) frag.appendChild(rowEl(ROWS[i], i));
  $("tree-inner").replaceChildren(frag);
}
function toggle(n) {
  const s = HITS ? closedWhileFiltering : openSet;
  if (s.has(n)) s.delete(n); else s.add(n);
  rebuild();
}
function reveal(n) {
  if (!HITS) for (let p = n.kind === "step" ? n.owner : n.parent; p; p = p.parent) openSet.add(p);
  rebuild();
  const i = ROWS.findIndex(r => r.n === n), box = $("tree");
  if (i >= 0 && (i * ROW_H < box.scrollTop || (i + 1) * ROW_H > box.scrollTop + box.clientHeight)) {
    box.scrollTop = Math.max(0, i * ROW_H - box.clientHeight / 3);
    renderTree();
  }
}
let ticking = false;
$("tree").addEventListener("scroll", () => { if (!ticking) { ticking = true; requestAnimationFrame(() => { ticking = false; renderTree(); }); } });
$("tree-inner").addEventListener("click", ev => {
  const row = ev.target.closest(".row"); if (!row) return;
  const n = row.dataset.event ? byId.get(row.dataset.event) : D.steps[Number(row.dataset.step)];
  if (ev.target.classList.contains("tog") && row.dataset.kids) toggle(n); else select(n, false);
});

// ---- header and toolbar
const run = D.run;
$("title").textContent = `${run.name} — run ${run.run_id}`;
for (const t of [`status ${run.status}`, `${D.events.length} events`, `${D.steps.length} coordination steps`, `${D.agents.length} agents`,
                 run.duration == null ? "running" : `${run.duration.toFixed(3)} s`, `${D.tokens} tokens`]) $("meta").appendChild(h("span", t));
// Signature check (trace run with signing keys): a failing record is a forgery or damage.
if (D.signatures && D.signatures.unverified.length) {
  const sig = D.signatures, warn = h("div", `⚠ ${sig.unverified.length} of ${sig.records} journal records FAIL signature verification (filter status: flagged)`);
  warn.id = "unverified"; warn.className = "b flag"; $("meta").appendChild(warn);
} else if (D.signatures) $("meta").appendChild(h("span", `all ${D.signatures.records} records verified`));
function options(select, values, label) {
  const parent = label ? select.appendChild(Object.assign(document.createElement("optgroup"), {label})) : select;
  for (const v of values) parent.appendChild(Object.assign(document.createElement("option"), {value: v[0], textContent: v[1]}));
}
const uniq = xs => [...new Set(xs)].sort();
options($("f-agent"), D.agents.map(a => [a, a]));
options($("f-type"), uniq(D.events.map(e => e.type)).map(t => [t, t]), "event types");
if (D.steps.length) options($("f-type"), uniq(D.steps.map(s => s.step)).map(s => ["step:" + s, s]), "coordination steps");
const statuses = uniq(D.events.flatMap(e => e.deliveries.map(d => d.outcome))).map(s => [s, s.replace("_", "-")]);
if (D.events.some(e => e.errors.length)) statuses.push(["error", "with an error"]);
if (D.events.some(e => e.flags.length) || D.steps.some(s => s.flags.length)) statuses.push(["flagged", "flagged"]);
options($("f-status"), statuses);
let qTimer = null;
$("q").addEventListener("input", () => { clearTimeout(qTimer); qTimer = setTimeout(() => { F.q = $("q").value.trim().toLowerCase(); closedWhileFiltering = new Set(); rebuild(); }, 120); });
for (const [id, key] of [["f-agent", "agent"], ["f-type", "type"], ["f-status", "status"]])
  $(id).addEventListener("change", () => { F[key] = $(id).value; closedWhileFiltering = new Set(); rebuild(); });
$("f-steps").addEventListener("change", () => { F.steps = $("f-steps").checked; rebuild(); });
$("expand-all").addEventListener("click", () => { if (HITS) closedWhileFiltering = new Set(); else for (const e of D.events) openSet.add(e); rebuild(); });
$("collapse-all").addEventListener("click", () => { if (HITS) closedWhileFiltering = new Set(SHOWN); else openSet.clear(); rebuild(); });

// ---- timeline: lanes per agent; publishes as circles, handling as bars
const span = Math.max(D.t1 - D.t0, 1e-3), LEFT = 130, WIDTH = 680;
const x = t => LEFT + (t - D.t0) / span * WIDTH;
const tlNodes = [];
(function timeline() {
  const svg = $("timeline"), laneH = 28;
  svg.setAttribute("width", LEFT + WIDTH + 20); svg.setAttribute("height", D.agents.length * laneH + 30);
  D.agents.forEach((a, i) => {
    el("line", {x1: LEFT, x2: LEFT + WIDTH, y1: i * laneH + 20, y2: i * laneH + 20, stroke: "#e3e6ea"}, svg);
    el("text", {x: 4, y: i * laneH + 24, class: "lane-label"}, svg, a);
  });
  for (const s of D.spans) {
    const lane = D.agents.indexOf(s.agent), e = byId.get(s.event); if (lane < 0 || !e) continue;
    const g = el("g", {class: "ev", "data-event": s.event}, svg);
    const x0 = x(s.start), x1 = Math.max(x(s.end || s.start), x0 + 3);
    el("rect", {x: x0, y: lane * laneH + 12, width: x1 - x0, height: 16, rx: 3, fill: s.outcome === "handled" ? color(s.agent) : "#fa5252", opacity: .55}, g);
    tlNodes.push([g, e]);
  }
  for (const e of D.events) {
    const lane = D.agents.indexOf(e.source); if (lane < 0) continue;
    const g = el("g", {class: "ev", "data-event": e.id}, svg);
    el("circle", {cx: x(e.time), cy: lane * laneH + 20, r: 5, fill: color(e.source), stroke: "#fff"}, g);
    el("title", {}, g, `#${e.index} ${e.type} → ${e.topic}`);
    tlNodes.push([g, e]);
  }
  el("text", {x: LEFT, y: D.agents.length * laneH + 26}, svg, "0 s");
  el("text", {x: LEFT + WIDTH - 40, y: D.agents.length * laneH + 26}, svg, `${span.toFixed(3)} s`);
  svg.addEventListener("click", ev => { const g = ev.target.closest("g.ev"); if (g) select(byId.get(g.dataset.event), true); });
})();
function dimTimeline() { for (const [g, e] of tlNodes) g.classList.toggle("dim", !!HITS && !HITS.has(e)); }

// ---- sequence diagram: lifelines per agent, one arrow per (event, handler), windowed
const colW = Math.max(110, Math.min(180, 1000 / Math.max(D.agents.length, 1)));
const cx = a => 20 + D.agents.indexOf(a) * colW + colW / 2;
let SEQ = [];
(function seqHead() {
  const head = $("seq-head"), w = D.agents.length * colW + 40;
  head.setAttribute("width", w); head.setAttribute("height", 22); $("sequence").setAttribute("width", w);
  D.agents.forEach(a => el("text", {x: cx(a), y: 16, "text-anchor": "middle", class: "lane-label"}, head, a));
  const defs = el("defs", {}, $("sequence"));
  const m = el("marker", {id: "arrow", markerWidth: 8, markerHeight: 8, refX: 7, refY: 4, orient: "auto"}, defs);
  el("path", {d: "M0,0 L8,4 L0,8 z", fill: "#495057"}, m);
})();
function buildSequence() {
  SEQ = [];
  for (const e of D.events) {
    if (HITS && !HITS.has(e)) continue;
    if (e.reply_to_agent) SEQ.push({e, to: e.reply_to_agent, reply: true});
    else if (!e.deliveries.length) SEQ.push({e, to: null});
    else for (const d of e.deliveries) SEQ.push({e, to: d.agent});
  }
  const svg = $("sequence"), height = SEQ.length * SEQ_H + 10, lines = $("seq-lines");
  svg.setAttribute("height", height);
  $("seq-box").style.height = Math.min(height + 4, 360) + "px";
  lines.replaceChildren();
  D.agents.forEach(a => el("line", {x1: cx(a), x2: cx(a), y1: 0, y2: height, stroke: "#ced4da", "stroke-dasharray": "4 3"}, lines));
  renderSequence();
}
function renderSequence() {
  const box = $("seq-box"), top = box.scrollTop, rows = $("seq-rows");
  const first = Math.max(0, Math.floor(top / SEQ_H) - MARGIN);
  const last = Math.min(SEQ.length, Math.ceil((top + box.clientHeight) / SEQ_H) + MARGIN);
  rows.replaceChildren();
  for (let i = first; i < last; i++) {
    const r = SEQ[i], y = i * SEQ_H + 14, g = el("g", {class: "ev" + (r.e === selected ? " selected" : ""), "data-event": r.e.id}, rows);
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
  }
}
let seqTicking = false;
$("seq-box").addEventListener("scroll", () => { if (!seqTicking) { seqTicking = true; requestAnimationFrame(() => { seqTicking = false; renderSequence(); }); } });
$("sequence").addEventListener("click", ev => { const g = ev.target.closest("g.ev"); if (g) select(byId.get(g.dataset.event), true); });

// ---- details panel
function kv(rows) {
  const t = document.createElement("table");
  for (const [k, v] of rows) { const tr = document.createElement("tr"); tr.appendChild(h("th", k)); const td = document.createElement("td"); if (v instanceof Node) td.appendChild(v); else td.textContent = String(v); tr.appendChild(td); t.appendChild(tr); }
  return t;
}
function link(n, text) { const a = h("a", text); a.addEventListener("click", () => select(n, true)); return a; }
function stepFields(s) { return Object.fromEntries(Object.entries(s).filter(([k]) => !SKIP.has(k) && k !== "_sum")); }
function select(n, scrollTo) {
  if (!n) return;
  selected = n;
  document.querySelectorAll("svg .selected").forEach(g => g.classList.remove("selected"));
  if (n.kind === "event") document.querySelectorAll(`svg [data-event="${n.id}"]`).forEach(g => g.classList.add("selected"));
  if (scrollTo) reveal(n); else renderTree();
  const box = $("detail-body"); box.className = ""; box.replaceChildren();
  if (n.kind === "step") {
    box.appendChild(h("h3", `✎ ${n.step}`));
    box.appendChild(h("div", stepSummary(n), "stepline"));
    box.appendChild(kv([["by", n.agent], ["pattern", n.pattern || "—"], ["flags", n.flags.join(", ") || "—"],
      ["while handling", n.owner ? link(n.owner, `#${n.owner.index} ${n.owner.type}`) : "— (the run itself)"]]));
    const pre = h("pre", JSON.stringify(stepFields(n), null, 2)); pre.id = "step-json"; box.appendChild(pre);
    return;
  }
  const e = n;
  box.appendChild(h("h3", `#${e.index} ${e.type}`));
  box.appendChild(kv([["id", e.id], ["topic", e.topic], ["from", e.source],
    ["caused by", e.parent ? link(e.parent, `#${e.parent.index} ${e.parent.type}`) : e.causation_id || "— (external input)"],
    ["correlation", e.correlation_id || "—"], ["tokens", e.tokens], ["flags", e.flags.join(", ") || "—"]]));
  box.appendChild(h("h4", "Deliveries"));
  if (!e.deliveries.length) box.appendChild(h("div", "not delivered to any agent (a reply or an unsubscribed topic)", "muted"));
  for (const d of e.deliveries) {
    box.appendChild(h("div", `${d.label || d.agent}: ${d.outcome}` + (d.duration_ms != null ? ` in ${d.duration_ms.toFixed(1)} ms` : "") + (d.attempts > 1 ? `, ${d.attempts} attempts` : "") + (d.resumed ? `, resumed ${d.resumed} calls from the journal` : "") + (d.error ? ` — ${d.error}` : ""), d.error ? "bad" : ""));
  }
  if (e.steps.length) {
    box.appendChild(h("h4", "Coordination steps while handling it"));
    for (const s of e.steps) { const line = h("div", undefined, "stepline"); line.appendChild(link(s, `✎ ${s.agent} ${s.step}`)); line.appendChild(document.createTextNode(" " + stepSummary(s))); box.appendChild(line); }
  }
  if (e.calls.length) {
    box.appendChild(h("h4", "Model and tool calls"));
    for (const c of e.calls) {
      box.appendChild(h("div", `${c.kind.replace("_call", "")} ${c.name} (${c.resumed ? "resumed from the journal" : `${c.duration_ms} ms`})` + (c.error ? ` — ${c.error}` : ""), c.error ? "bad" : ""));
      box.appendChild(h("pre", JSON.stringify({request: c.request, response: c.response}, null, 2)));
    }
  }
  box.appendChild(h("h4", "Envelope"));
  const pre = h("pre", JSON.stringify(e.envelope, null, 2)); pre.id = "envelope"; box.appendChild(pre);
}
window.agentbusSelect = id => select(byId.get(id), true);
rebuild();
"""

TEMPLATE = (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>__TITLE__</title>\n<style>"
    + _CSS
    + "</style></head>\n<body>"
    + _HTML
    + '<script id="trace-data" type="application/json">__DATA__</script>\n<script>'
    + _JS
    + "</script>\n</body></html>\n"
)
