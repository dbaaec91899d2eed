"""``agentbus check-compat``: does every stored run still fit the current code?

Each recorded event is decoded as a consumer would (:func:`~agentbus.envelope.decode_data`:
its type looked up, an older version upcast, the payload validated against today's
class). What no longer fits is listed by run, event, type and reason; with ``replay`` each
run is also re-executed against the recording (:func:`~agentbus.replay.replay_run`) and
its verdict reported. A CI gate: run it against a copy of production's journal before
deploying new message classes (docs/schema-evolution.md).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .app import App, load_app
from .envelope import Envelope, decode_data
from .errors import DecodeError, UsageError
from .journal import Journal
from .message import lookup_type

__all__ = ["CompatReport", "Misfit", "check_compat"]

#: Types of the runtime's own events (error replies): not the application's to evolve.
_INTERNAL = "agentbus."


@dataclass(frozen=True, slots=True)
class Misfit:
    """A recorded event the current code cannot decode, and why."""

    run_id: str
    event_id: str
    type: str
    reason: str
    error: str


@dataclass
class CompatReport:
    """What :func:`check_compat` found."""

    runs: int = 0
    events: int = 0
    #: Events decoded (upcast where older) by today's classes.
    fitting: int = 0
    #: Events whose type no loaded code registers, by type (another app's, or a type
    #: that was removed).
    unknown: Counter[str] = field(default_factory=Counter)
    misfits: list[Misfit] = field(default_factory=list)
    #: With ``replay``: each run's verdict (``identical``, or what diverged / failed).
    replays: dict[str, str] = field(default_factory=dict)

    def ok(self, *, strict: bool = False) -> bool:
        """No misfit, every replay identical; with ``strict``, no unknown type either."""
        replays_ok = all(v == "identical" for v in self.replays.values())
        return not self.misfits and replays_ok and not (strict and self.unknown)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "events": self.events,
            "fitting": self.fitting,
            "unknown": dict(self.unknown),
            "misfits": [_slots(m) for m in self.misfits],
            "replays": self.replays,
        }


def _slots(m: Misfit) -> dict[str, str]:
    return {k: getattr(m, k) for k in Misfit.__slots__}


async def check_compat(
    journal: Journal,
    *,
    app: str | App | None = None,
    run_ids: list[str] | None = None,
    name: str | None = None,
    limit: int = 1000,
    replay: bool = False,
    url: str | None = None,
    journal_url: str | None = None,
) -> CompatReport:
    """Decode every event of the stored runs (``run_ids``, else the newest ``limit``
    runs, named ``name`` if given) with the current code.

    ``app`` (a reference or an :class:`App`) is loaded first, registering its message
    types and upcasters; without it each run's recorded app is loaded. ``replay`` also
    re-executes each run (``url`` / ``journal_url``: where it is stored)."""
    if isinstance(app, str):
        app = load_app(app)
    report = CompatReport()
    loaded: set[str] = set()
    if run_ids:
        runs = [await journal.run(r) for r in run_ids]
    else:
        runs = [r for r in await journal.runs(limit=limit) if name is None or r.name == name]
    for info in runs:
        ref = info.meta.get("app")
        if app is None and isinstance(ref, str) and ref not in loaded:
            loaded.add(ref)
            try:
                load_app(ref)
            except UsageError:
                pass  # its types stay unknown, and are reported as such
        report.runs += 1
        for rec in await journal.records(info.run_id):
            event = rec.record.get("event") if rec.kind == "published" else None
            if not isinstance(event, dict) or str(event.get("type", "")).startswith(_INTERNAL):
                continue
            report.events += 1
            _check(report, info.run_id, event)
        if replay:
            report.replays[info.run_id] = await _replay(info.run_id, app, url, journal_url)
    return report


def _check(report: CompatReport, run_id: str, event: dict[str, Any]) -> None:
    type_name = str(event.get("type", ""))
    if lookup_type(type_name) is None:
        report.unknown[type_name] += 1
        return
    try:
        decode_data(Envelope.from_dict(event))
    except DecodeError as exc:
        report.misfits.append(
            Misfit(run_id, str(event.get("id", "")), type_name, exc.reason, str(exc))
        )
        return
    report.fitting += 1


async def _replay(run_id: str, app: App | None, url: str | None, journal_url: str | None) -> str:
    from .replay import replay_run  # replay imports the runtime: only when asked for

    try:
        result = await replay_run(run_id, url=url, app=app, journal_url=journal_url)
    except Exception as exc:  # a run that cannot be replayed at all is a finding too
        return f"failed: {type(exc).__name__}: {exc}"
    if result.divergence is None:
        return "identical"
    return f"diverged: {result.divergence.describe()}"
