"""Re-execute a recorded run, or fork it, and compare the result with the recording.

Re-execution starts the run's app on a fresh namespace (its own key prefix on Redis, its own
in-process topics on the embedded transport), re-injects the run's external inputs (the
events its driver published, which have no cause), and answers every model and tool call
from the recording through the runtime's call seam. The events produced are compared with
the recorded ones, ignoring ids and times (:mod:`agentbus.compare`). The replay is recorded
as a run of its own, linked to its source, in the same store.

Forking does the same up to event ``N`` of the recording; calls made while handling later
events go to the live model and tools, so a changed prompt, model or code takes effect.

With signing keys (``signer=``, default ``$AGENTBUS_SIGNING_KEYS``) every record of the
recording is verified first, and a run with records that fail (unsigned, altered, forged
or moved from another run) is refused with :class:`UnverifiedRecords`: replay would
re-inject their events and answer live agents with their model and tool results.
``allow_unverified=True`` replays it anyway and lists them in ``ReplayResult.unverified``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .app import App, load_app
from .compare import Divergence, compare_events, normalize
from .context import CallKind, Scope
from .envelope import Envelope, new_id
from .errors import AgentBusError, UsageError
from .journal import Journal
from .runtime import Runtime
from .signing import Signer, unverified_records
from .transports import JournalEntry, JournalRecord, RunInfo, Transport, open_transport, resolve_url

__all__ = ["EXIT_CODES", "ReplayMismatch", "ReplayResult", "UnverifiedRecords", "replay_run"]


class ReplayMismatch(AgentBusError):
    """A call made during replay has no recorded counterpart (live calls are not allowed)."""


class UnverifiedRecords(AgentBusError):
    """The recording has journal records whose signature fails; replay refuses them."""

    def __init__(self, run_id: str, failed: dict[str, str], kinds: dict[str, str]) -> None:
        seq, reason = next(iter(failed.items()))
        super().__init__(
            f"run {run_id} has {len(failed)} journal record(s) that fail signature "
            f"verification (first: record {seq} {kinds.get(seq, '?')}: {reason}); replay "
            "would re-inject their events and answers, so it refuses. Check them with "
            "`agentbus trace`; pass allow_unverified=True (--allow-unverified) to replay anyway"
        )
        self.run_id = run_id
        self.failed = failed


class RecordedCallError(AgentBusError):
    """A replayed call whose recording is an error: raised again, as it was."""


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass
class _Recorded:
    position: int
    name: str
    request: dict[str, Any]
    response: dict[str, Any] | None
    error: str | None


# What a model call's request says about *which* model serves it. The recording answers the
# call whatever model is configured now (CI has no key), so these never count as a change.
_MODEL_CHOICE = ("model", "provider")


def _comparable(kind: str, request: dict[str, Any]) -> str:
    if kind == "model":
        request = {k: v for k, v in request.items() if k not in _MODEL_CHOICE}
    return _canonical(request)


@dataclass
class CallTape:
    """Recorded model/tool calls, looked up by who made them while handling what."""

    fork_at: int | None = None
    calls: dict[tuple[str, ...], deque[_Recorded]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    mismatches: list[Divergence] = field(default_factory=list)
    substituted: int = 0
    live: int = 0
    #: What answered each substituted call, by (agent, handled event id, call index).
    sources: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    #: How each question to a person ended (``question_answered`` / ``question_timed_out``
    #: record), looked up like calls: by who asked it while handling what, n-th.
    questions: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: list[JournalRecord], fork_at: int | None) -> CallTape:
        tape = cls(fork_at=fork_at)
        events: dict[str, tuple[int, dict[str, Any]]] = {}
        for r in records:
            if r.kind == "published":
                events[str(r.record["event"]["id"])] = (len(events), r.record["event"])
        for r in records:
            if r.kind not in ("model_call", "tool_call"):
                continue
            handled = events.get(str(r.record.get("event_id")))
            if handled is None:
                continue
            position, event = handled
            key = _key(
                r.kind.removesuffix("_call"),
                str(r.record.get("name")),
                str(r.record.get("agent")),
                event,
                int(r.record.get("call_index", 0)),
            )
            tape.calls[key].append(
                _Recorded(
                    position,
                    str(r.record.get("name")),
                    r.record.get("request") or {},
                    r.record.get("response"),
                    r.record.get("error"),
                )
            )
        asked: dict[str, tuple[str, ...]] = {}
        for r in records:
            handled = events.get(str(r.record.get("event_id")))
            if r.kind == "question_asked" and handled is not None:
                key = _key(
                    "question",
                    "",
                    str(r.record.get("agent")),
                    handled[1],
                    int(r.record.get("question_index", 0)),
                )
                asked[str(r.record.get("question_id"))] = key
            elif r.kind in ("question_answered", "question_timed_out"):
                question = asked.get(str(r.record.get("question_id")))
                if question is not None:
                    tape.questions[question] = r.record
        return tape

    async def answer_question(self, scope: Scope, agent: str, index: int) -> dict[str, Any]:
        """Replay's ``ask_human``: how the recorded question ended (answered or timed
        out); a question the recording has no answer to raises :class:`ReplayMismatch`."""
        assert scope.event is not None  # ask_human is only asked while handling
        key = _key("question", "", agent, scope.event.to_dict(), index)
        recorded = self.questions.get(key)
        if recorded is None:
            raise ReplayMismatch(
                f"{agent} asked question #{index} that the recording has no answer to "
                "(unanswered when the run was recorded, or asked differently now)"
            )
        return recorded

    async def substitute(
        self, kind: CallKind, name: str, request: dict[str, Any], scope: Scope, index: int
    ) -> dict[str, Any] | None:
        """The runtime's call seam during replay; ``None`` means call live."""
        if scope.event is None:
            return None  # a call from the run's own code, not from a handler
        key = _key(kind, name, str(scope.agent), scope.event.to_dict(), index)
        queue = self.calls.get(key)
        if not queue:
            if self.fork_at is not None:
                self.live += 1
                return None
            raise ReplayMismatch(
                f"{scope.agent} made a {kind} call {name!r} (#{index}) that the recording does not have"
            )
        recorded = queue.popleft()
        if self.fork_at is not None and recorded.position >= self.fork_at:
            self.live += 1
            return None
        if _comparable(kind, recorded.request) != _comparable(kind, request):
            self.mismatches.append(
                Divergence(
                    recorded.position,
                    f"{scope.agent}'s {kind} call {name!r} sent a different request",
                    recorded.request,
                    request,
                )
            )
        self.substituted += 1
        self.sources[(str(scope.agent), str(scope.causation_id), index)] = {
            "source_position": recorded.position,
            "name": recorded.name,
            **{k: recorded.request[k] for k in _MODEL_CHOICE if k in recorded.request},
        }
        if recorded.error is not None:
            raise RecordedCallError(f"recorded {kind} call {name!r} failed: {recorded.error}")
        return recorded.response

    def annotate(self, records: list[JournalRecord]) -> None:
        """Write into the replay's call records which recorded call answered each one."""
        for r in records:
            if r.kind in ("model_call", "tool_call") and r.record.get("substituted"):
                key = (
                    str(r.record.get("agent")),
                    str(r.record.get("event_id")),
                    int(r.record.get("call_index", 0)),
                )
                source = self.sources.get(key)
                if source is not None:
                    r.record["recorded"] = source


def _key(kind: str, name: str, agent: str, event: dict[str, Any], index: int) -> tuple[str, ...]:
    n = normalize(event)
    # A model call is the agent's n-th call while handling that event, whatever model
    # serves it: the model name comes from the environment (OPENAI_MODEL, AGENTBUS_MODEL),
    # which a replay in CI does not have. A tool's name is the agent's choice, so it counts.
    if kind == "model":
        name = ""
    return (kind, name, agent, str(n["type"]), _canonical(n["data"]), str(index))


#: ``agentbus replay`` exit status by verdict (2 is a usage error, as for every command).
EXIT_CODES = {"identical": 0, "diverged": 1, "diverged_after_fork": 3}


def _verdict(divergence: Divergence | None, fork_at: int | None) -> str:
    if divergence is None:
        return "identical"
    if fork_at is not None and divergence.position >= fork_at:
        return "diverged_after_fork"
    return "diverged"


@dataclass
class ReplayResult:
    """The outcome of :func:`replay_run`."""

    source_run_id: str
    run_id: str
    divergence: Divergence | None
    recorded_events: int
    produced_events: int
    seconds: float
    fork_at: int | None = None
    substituted_calls: int = 0
    live_calls: int = 0
    #: ``seq``, ``kind``, ``reason`` of recorded records that failed verification
    #: (replayed only with ``allow_unverified=True``).
    unverified: list[dict[str, str]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.divergence is None

    @property
    def verdict(self) -> str:
        """``identical``; ``diverged_after_fork`` when a fork differs only from its fork
        point on (what a fork with a changed prompt, model or code is for); else ``diverged``."""
        return _verdict(self.divergence, self.fork_at)

    @property
    def exit_code(self) -> int:
        """The ``agentbus replay`` exit status: 0 identical, 1 diverged, 3 diverged after the fork."""
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_run_id": self.source_run_id,
            "run_id": self.run_id,
            "identical": self.identical,
            "verdict": self.verdict,
            "divergence": None if self.divergence is None else self.divergence.to_dict(),
            "recorded_events": self.recorded_events,
            "produced_events": self.produced_events,
            "seconds": self.seconds,
            "fork_at": self.fork_at,
            "substituted_calls": self.substituted_calls,
            "live_calls": self.live_calls,
            "unverified": self.unverified,
        }


async def replay_run(
    run_id: str,
    *,
    url: str | None = None,
    app: str | App | None = None,
    fork_at: int | None = None,
    settle_timeout: float = 60.0,
    signer: Signer | None = None,
    allow_unverified: bool = False,
    journal_url: str | None = None,
) -> ReplayResult:
    """Re-execute (or with ``fork_at``, fork) a recorded run; see the module docstring.

    Raises :class:`UsageError` when the run or its app cannot be found, and
    :class:`UnverifiedRecords` when records fail signature verification (unless
    ``allow_unverified``).
    """
    url = resolve_url(url)
    signer = signer if signer is not None else Signer.from_env()
    async with Journal.open(url, journal_url=journal_url) as journal:
        info = await journal.run(run_id)
        records = await journal.records(info.run_id)
        failed = {} if signer is None else unverified_records(signer, info.run_id, records)
        kinds = {r.seq: r.kind for r in records if r.seq in failed}
        if failed and not allow_unverified:
            raise UnverifiedRecords(info.run_id, failed, kinds)
        the_app = _resolve_app(app, info)
        recorded = [r.record["event"] for r in records if r.kind == "published"]
        if fork_at is not None and not 0 <= fork_at <= len(recorded):
            raise UsageError(f"--fork-at must be between 0 and {len(recorded)}, got {fork_at!r}")
        tape = CallTape.from_records(records, fork_at)
        started = time.perf_counter()
        new_id_ = new_id()
        produced_records = await _execute(
            url,
            journal.transport,
            the_app,
            info,
            recorded,
            tape,
            new_id_,
            fork_at,
            settle_timeout,
            signer,
        )
        seconds = time.perf_counter() - started
        tape.annotate(produced_records)
        produced = [r.record["event"] for r in produced_records if r.kind == "published"]
        divergence = _first(compare_events(recorded, produced), tape.mismatches)
        if signer is not None and journal.transport.store.signer is None:
            # The replay's records are annotated above (which recorded call answered
            # each): signed again as they are stored, so they still verify.
            journal.transport.store.signer = signer
        await _store(journal, info, produced_records, new_id_, the_app, fork_at, divergence)
    return ReplayResult(
        source_run_id=info.run_id,
        run_id=new_id_,
        divergence=divergence,
        recorded_events=len(recorded),
        produced_events=len(produced),
        seconds=seconds,
        fork_at=fork_at,
        substituted_calls=tape.substituted,
        live_calls=tape.live,
        unverified=[
            {"seq": seq, "kind": kinds[seq], "reason": reason} for seq, reason in failed.items()
        ],
    )


def _resolve_app(app: str | App | None, info: RunInfo) -> App:
    if isinstance(app, App):
        return app
    ref = app or info.meta.get("app")
    if not ref:
        raise UsageError(
            f"run {info.run_id} does not record how its app is loaded; pass --app MODULE:OBJ"
        )
    return load_app(str(ref))


def _first(event_divergence: Divergence | None, mismatches: list[Divergence]) -> Divergence | None:
    candidates = [d for d in [event_divergence, *mismatches] if d is not None]
    return min(candidates, key=lambda d: d.position) if candidates else None


def _isolated_url(url: str, main: Transport) -> tuple[str, dict[str, Any]]:
    if urlsplit(url).scheme == "memory":
        return "memory://?journal=", {}
    return url, {"prefix": f"{main.keys.prefix}replay:{new_id()}:"}


async def _execute(
    url: str,
    main: Transport,
    app: App,
    info: RunInfo,
    recorded: list[dict[str, Any]],
    tape: CallTape,
    run_id: str,
    fork_at: int | None,
    settle_timeout: float,
    signer: Signer | None,
) -> list[JournalRecord]:
    exec_url, options = _isolated_url(url, main)
    transport = open_transport(exec_url, **options)
    try:
        async with Runtime(transport=transport, block_ms=100, signer=signer) as rt:
            rt.call_substitute = tape.substitute
            rt.question_substitute = tape.answer_question
            rt.add(*app.build_agents())
            await rt.ready()  # the agents' groups exist before the inputs arrive
            async with rt.run(info.name, run_id=run_id):
                inputs = []
                for event in recorded:
                    if event.get("causationid"):
                        continue  # produced by an agent: the replay must produce it itself
                    env = Envelope.from_dict(dict(event))
                    env.id, env.runid, env.traceparent, env.tracestate = new_id(), None, None, None
                    # Sent now (a signer's max_age judges it by this); compare ignores times.
                    env.time = Envelope(type=env.type, source=env.source).time
                    inputs.append(rt.publish_envelope(str(event.get("topic")), env))
                # Started in recorded order, they are queued (and written) in that order.
                await asyncio.gather(*inputs)
                await rt.idle(timeout=settle_timeout, drained=True)
            return await rt.journal.records(run_id)
    finally:
        if options:  # its own prefix on a shared store: leave nothing behind
            await transport.connect()
            await transport.admin.delete_prefix()
        await transport.aclose()


async def _store(
    journal: Journal,
    source: RunInfo,
    records: list[JournalRecord],
    run_id: str,
    app: App,
    fork_at: int | None,
    divergence: Divergence | None,
) -> None:
    """Copy the replay's journal into the main store, linked to its source."""
    meta = {
        "app": app.ref or source.meta.get("app"),
        "replay_of": source.run_id,
        "mode": "fork" if fork_at is not None else "replay",
        "verdict": _verdict(divergence, fork_at),
    }
    if fork_at is not None:
        meta["fork_at"] = fork_at
    started = records[0].time if records else time.time()
    ended = records[-1].time if records else started
    name = f"{source.name} ({meta['mode']} of {source.run_id[:10]})"
    info = RunInfo(run_id, name, "running", started, None, meta=meta)
    await journal.transport.store.save_run(info)
    for i in range(0, len(records), 1000):
        await journal.transport.store.write_journal(
            [JournalEntry(run_id, r.record) for r in records[i : i + 1000]]
        )
    info.status, info.ended = "completed", ended
    await journal.transport.store.save_run(info)
