"""The runtime: hosts agents in a process and connects them to a transport.

Several runtimes in several processes (or machines) pointed at the same Redis form one
system: shared subscriptions split the work between them, broadcast ones reach all.

::

    async with Runtime("redis://127.0.0.1:6379/0") as rt:
        rt.add(Researcher())
        async with rt.run("research") as run:
            answer = await run.request("research.questions", Question(text="..."))
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ._hooks import Metrics, NullTracer, Tracer
from ._requests import Requests
from ._subscription import Subscription
from ._supervise import supervise
from ._writer import Writer
from .agent import Agent
from .context import CallKind, Context, Scope, current_scope
from .envelope import DEFAULT_MAX_EVENT_BYTES, Envelope, new_id
from .errors import UsageError
from .journal import Journal, record
from .keys import Keys, validate_topic
from .message import Message
from .redact import redact, redact_text
from .retention import Maintenance, Retention
from .runs import Run
from .signing import Signer
from .transports import JournalEntry, RunInfo, Transport, open_transport

__all__ = ["Runtime"]

log = logging.getLogger("agentbus.runtime")
M = TypeVar("M", bound=Message)


class Runtime:
    """Hosts agents, publishes events, serves requests and records runs.

    Use it as ``async with Runtime(url) as rt`` (or ``await rt.start()`` and
    ``await rt.aclose()``). ``url`` selects the transport (``memory://`` by default,
    ``redis://``, ``rediss://``, ``unix://``); pass ``transport=`` to share one.

    Tuning: ``concurrency`` handlers at once per agent and topic; ``batch_size`` entries per
    read; ``block_ms`` per blocking read; entries pending longer than
    ``visibility_timeout`` seconds are claimed from dead consumers; a failing handler
    is tried ``max_attempts`` times with exponential backoff between ``retry_backoff``
    (initial, maximum) seconds; one attempt may take ``handler_timeout`` seconds
    (``None``: no limit; ``@handle(timeout=)`` overrides it), past which it is
    cancelled and counts as failed; while the store is unreachable a handler waits,
    however long, without using up attempts; on stop, in-flight handlers get
    ``grace_period`` seconds. ``journal=False`` disables recording (not recommended).

    ``signer`` (default: :meth:`Signer.from_env`, i.e. ``$AGENTBUS_SIGNING_KEYS``)
    signs every event published and dead-letters received events whose signature is
    missing or wrong (``bad signature``), that were signed for another topic (``topic
    mismatch``) or, with ``Signer(max_age=)``, are too old; it also signs every journal
    record its transport writes. ``retention`` (default :class:`Retention()`) sets what
    the periodic maintenance step removes: acknowledged topic entries, idle consumers,
    old runs. Raises :class:`UsageError` for bad settings.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        transport: Transport | None = None,
        prefix: str | None = None,
        consumer: str | None = None,
        concurrency: int = 64,
        batch_size: int = 64,
        block_ms: int = 1000,
        visibility_timeout: float = 30.0,
        max_attempts: int = 3,
        retry_backoff: tuple[float, float] = (0.1, 5.0),
        grace_period: float = 10.0,
        handler_timeout: float | None = 600.0,
        journal: bool = True,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        dedupe_ttl: int = 86_400,
        tracer: Tracer | None = None,
        signer: Signer | None = None,
        retention: Retention | None = None,
    ) -> None:
        if concurrency < 1 or batch_size < 1 or max_attempts < 1:
            raise UsageError(
                "concurrency, batch_size and max_attempts must be at least 1, got "
                f"{concurrency!r}, {batch_size!r}, {max_attempts!r}"
            )
        if visibility_timeout <= 0:
            raise UsageError(f"visibility_timeout must be positive, got {visibility_timeout!r}")
        if handler_timeout is not None and not handler_timeout > 0:
            raise UsageError(
                f"handler_timeout must be positive seconds or None, got {handler_timeout!r}"
            )
        options: dict[str, Any] = {}
        if prefix is not None:
            options["prefix"] = prefix
        self.transport: Transport = transport or open_transport(url, **options)
        self._owns_transport = transport is None
        self.transport_keys: Keys = self.transport.keys
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.visibility_timeout = visibility_timeout
        self.claim_interval = max(visibility_timeout / 2, 0.05)
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.grace_period = grace_period
        self.handler_timeout = handler_timeout
        self.journal_enabled = journal
        self.max_event_bytes = max_event_bytes
        self.dedupe_ttl = dedupe_ttl
        self.tracer: Tracer = tracer or NullTracer()
        #: Signs what this runtime publishes and verifies what it receives (``None``: off).
        self.signer: Signer | None = signer if signer is not None else Signer.from_env()
        if self.signer is not None and self.transport.store.signer is None:
            # Records are signed where the transport serialises them (one place for all
            # of them). A transport shared by several runtimes signs with the first signer.
            self.transport.store.signer = self.signer
        self.metrics = Metrics(self.tracer.metrics)
        #: Replaces live model/tool calls (replay installs one); ``None`` calls live.
        #: Called with (kind, name, request, scope, call index); returning ``None``
        #: lets the live call happen.
        self.call_substitute: (
            Callable[[CallKind, str, dict[str, Any], Scope, int], Awaitable[dict[str, Any] | None]]
            | None
        ) = None
        self.writer = Writer(self.transport, journal=journal)
        self._agents: list[Agent] = []
        self._subs: list[Subscription] = []
        self._hosting: set[asyncio.Task[None]] = set()
        self._lease_task: asyncio.Task[None] | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self._requests = Requests(self)
        self.retention = retention or Retention()
        #: Trims acknowledged entries, removes idle consumers, prunes old runs.
        self.maintenance = Maintenance(
            self.transport, self.retention, self._read_groups, self._inbox_read
        )
        self._started = False
        self._closed = False
        self._stop_requested = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------
    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Connect and start hosting the agents added so far.

        Raises ``TransportUnavailable`` naming the URL when the store cannot be reached.
        """
        if self._started:
            return
        await self.transport.connect()
        self.writer.start()
        self._lease_task = supervise(self._leases, "agentbus-leases")
        self._watchdog_task = supervise(self._watchdog, "agentbus-watchdog")
        self.maintenance.start()
        self._started = True
        self.metrics.start(self)
        for agent in list(self._agents):
            await self._host(agent)

    def add(self, *agents: Agent) -> None:
        """Host ``agents`` here (started at once if the runtime is running).

        Raises :class:`UsageError` for a non-agent or an agent without handlers.
        """
        for agent in agents:
            if not isinstance(agent, Agent):
                raise UsageError(f"expected Agent instances, got {type(agent).__name__!r}")
            _plan(agent)  # validate annotations and duplicates now, not at the first event
            self._agents.append(agent)
            if self._started:
                task = asyncio.get_running_loop().create_task(self._host(agent))
                self._hosting.add(task)
                task.add_done_callback(self._hosting.discard)

    async def ready(self) -> None:
        """Wait until agents added to the running runtime are subscribed.

        Raises what hosting them raised (e.g. ``TransportError``).
        """
        if self._hosting:
            await asyncio.gather(*list(self._hosting))

    async def _host(self, agent: Agent) -> None:
        by_mode, from_start = _plan(agent)
        await agent.on_start(Context(self, agent.name))
        for mode, handlers in by_mode.items():
            group = agent.name if mode == "shared" else f"{agent.name}:{self.consumer}"
            sub = Subscription(self, agent, group, mode, handlers, from_start[mode])
            await sub.start()
            self._subs.append(sub)

    async def stop(self, grace: float | None = None) -> None:
        """Stop reading, let in-flight handlers finish within ``grace`` seconds.

        Handlers still running after the grace period are cancelled; their events stay
        pending and are delivered again (to this consumer on restart, or claimed by
        another after the visibility timeout).
        """
        if not self._started or self._closed:
            return
        grace = self.grace_period if grace is None else grace
        if self._hosting:
            await asyncio.gather(*list(self._hosting), return_exceptions=True)
        for task in (self._lease_task, self._watchdog_task):
            if task is not None:
                task.cancel()
                await asyncio.wait([task], timeout=1.0)
        await self.maintenance.aclose()
        for sub in self._subs:
            sub.stop_reading()
        cancelled = 0
        for sub in self._subs:
            cancelled += await sub.finish(grace)
        if cancelled:
            log.warning("%d handlers did not finish within %.1fs; left pending", cancelled, grace)
        for agent in self._agents:
            try:
                await agent.on_stop()
            except Exception:
                log.exception("on_stop of %r failed", agent)
        await self._requests.aclose()
        await self.metrics.aclose()
        await self.writer.aclose()
        for sub in self._subs:
            if sub.mode == "broadcast":
                for topic in sub.topics:
                    try:
                        await self.transport.delete_group(topic, sub.group)
                    except Exception as exc:
                        log.debug("could not remove broadcast group %s: %s", sub.group, exc)
        self._subs.clear()

    async def aclose(self) -> None:
        """Stop (with the grace period) and close the transport if we opened it."""
        if self._closed:
            return
        await self.stop()
        self._closed = True
        if self._owns_transport:
            await self.transport.aclose()

    def request_stop(self) -> None:
        """Ask :meth:`serve` to return (safe to call from a signal handler)."""
        self._stop_requested.set()

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Host the agents until SIGINT/SIGTERM or :meth:`request_stop`, then stop."""
        await self.start()
        loop = asyncio.get_running_loop()
        installed = []
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self.request_stop)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):
                    pass
        try:
            await self._stop_requested.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop()

    # -- publishing -------------------------------------------------------------------------
    async def publish(
        self,
        message: Message,
        topic: str,
        *,
        key: str | None = None,
        subject: str | None = None,
        source: str | None = None,
        **attributes: Any,
    ) -> str:
        """Publish ``message`` to ``topic``; returns the event id.

        Inside a handler or a run the event carries the run id and the causing event.
        Outside both, it starts a run of its own. Raises ``MessageTooLarge`` or
        ``TransportError``; a publish that returned is stored.
        """
        validate_topic(topic)
        env = Envelope.for_message(
            message, source=source or "client", partitionkey=key, subject=subject, **attributes
        )
        return await self.publish_envelope(env, topic)

    async def publish_envelope(
        self, env: Envelope, topic: str, *, entry_ids: list[str] | None = None
    ) -> str:
        """Publish a prepared envelope (run and causation filled from the scope).

        ``entry_ids``, when given, receives the stored entry's id (requests use it to ask
        where their request stands when the reply is late).
        """
        self._check_open()
        scope = current_scope()
        if scope is None:
            env.encode(self.max_event_bytes)  # refuse an oversized event before opening a run
            run = Run(self, f"publish {topic}", status="open")
            await run.begin()
            scope = Scope(run.run_id)
        env.topic = topic
        if env.runid is None:
            env.runid = scope.run_id
        if env.causationid is None and scope.causation_id is not None:
            env.causationid = scope.causation_id
        with self.tracer.produce(env, topic):
            if self.signer is not None:
                self.signer.sign(env)  # last: the tracer may have added attributes
            payload = env.encode(self.max_event_bytes)
            # A de-duplicated handler's events wait for its commit (requests cannot).
            outbox = scope.outbox if env.replyto is None else None
            journal: list[JournalEntry] = []
            if self.journal_enabled:
                journal = self.writer.take_journal() if outbox is None else []
                journal.append(
                    JournalEntry(
                        env.runid,
                        {  # record("published", ...) spelled out: one per publish
                            "kind": "published",
                            "time": time.time(),
                            "event_id": env.id,
                            "type": env.type,
                            "topic": topic,
                            "agent": env.source,
                        },
                        raw_event=payload,
                    )
                )
            if outbox is not None:
                outbox.append((topic, payload, journal))
                return env.id
            entry_id = await self.transport.publish(topic, payload, journal=journal)
            if entry_ids is not None:
                entry_ids.append(entry_id)
        self.metrics.published(topic)
        return env.id

    async def request(
        self,
        topic: str,
        message: Message,
        *,
        timeout: float | None = None,
        expect: type[M] | None = None,
        key: str | None = None,
        source: str | None = None,
    ) -> Any:
        """Publish ``message`` as a request and wait for the handler's reply.

        Returns the reply message (checked against ``expect`` when given). Raises
        :class:`RemoteError` when the handler failed, and :class:`RequestTimeout` (a
        ``TimeoutError``, saying where the request stands) when no reply comes: within
        ``timeout`` seconds when one is given; by default (``None``) when no agent takes
        the request within 30 s, or when it is no longer being worked on — a request held
        by a running handler, or by a crashed consumer until another claims it after the
        visibility timeout, is waited for (see docs/architecture.md, "Requests").
        Cancelling the call abandons the reply.
        """
        return await self._requests.request(
            topic, message, timeout=timeout, expect=expect, key=key, source=source
        )

    # -- runs and journal ---------------------------------------------------------------------
    def run(
        self, name: str, *, meta: dict[str, Any] | None = None, run_id: str | None = None
    ) -> Run:
        """A new run: ``async with rt.run("name") as run`` records it start to end."""
        return Run(self, name, meta=meta, run_id=run_id)

    @property
    def journal(self) -> Journal:
        """Read access to the recorded runs."""
        return Journal(self.transport)

    async def save_run(self, info: RunInfo) -> None:
        await self.transport.store.save_run(info)

    async def note(self, step: str, *, agent: str | None = None, **details: Any) -> None:
        """Record a ``step`` note in the current run's journal (and a tracing span)."""
        scope = current_scope()
        self.tracer.step(step, agent or (scope.agent if scope else None), details)
        if scope is None or not self.journal_enabled:
            return
        self.writer.journal(
            JournalEntry(
                scope.run_id,
                record(
                    "step",
                    step=step,
                    agent=agent or scope.agent,
                    event_id=scope.causation_id,
                    **redact(details),
                ),
            )
        )

    async def invoke(
        self,
        kind: CallKind,
        name: str,
        request: dict[str, Any],
        call: Callable[[], Awaitable[dict[str, Any]]],
        *,
        agent: str | None = None,
    ) -> dict[str, Any]:
        """The seam for external calls: journal them; on replay, substitute them."""
        scope = current_scope()
        index = 0
        if scope is not None:
            index = scope.calls
            scope.calls += 1
        started = time.perf_counter()
        substituted = False
        response: dict[str, Any] | None = None
        error: BaseException | None = None
        # What is recorded, traced and compared on replay has its secrets masked (API
        # keys, Authorization headers, URL passwords); only the live call sees them.
        shown: dict[str, Any] = redact(request)
        try:
            if self.call_substitute is not None and scope is not None:
                response = await self.call_substitute(kind, name, shown, scope, index)
                substituted = response is not None
            if response is None:
                who = agent or (scope.agent if scope else None)
                with self.tracer.call(kind, name, who, shown) as span:
                    response = await call()
                    span.response(response)
            return response
        except BaseException as exc:
            error = exc
            raise
        finally:
            if scope is not None and self.journal_enabled:
                fields: dict[str, Any] = {
                    "name": name,
                    "agent": agent or scope.agent,
                    "event_id": scope.causation_id,
                    "call_index": index,
                    "request": shown,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "substituted": substituted,
                }
                if error is not None:
                    fields["error"] = redact_text(f"{type(error).__name__}: {error}")
                else:
                    fields["response"] = redact(response)  # a tool may return a URL with a key
                self.writer.journal(JournalEntry(scope.run_id, record(f"{kind}_call", **fields)))

    # -- helpers ------------------------------------------------------------------------------------
    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (exponential, with full jitter on top half)."""
        initial, maximum = self.retry_backoff
        base: float = min(maximum, initial * (2 ** (attempt - 1)))
        return float(base / 2 + random.random() * base / 2)

    def _check_open(self) -> None:
        if self._closed:
            from .errors import TransportClosed

            raise TransportClosed("the runtime is closed")

    @property
    def agents(self) -> Sequence[Agent]:
        return tuple(self._agents)

    async def _leases(self) -> None:
        period = max(self.visibility_timeout / 3, 0.05)
        while True:
            await asyncio.sleep(period)
            for sub in list(self._subs):
                if sub.inflight:
                    await sub.renew_leases(older_than=period)

    async def _watchdog(self) -> None:
        """Interrupt handler attempts past their timeout, a few times per shortest one."""
        loop = asyncio.get_running_loop()
        period = 1.0
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            period = 1.0  # at most this late; shorter for short timeouts
            for sub in self._subs:
                if sub.shortest_timeout is not None:
                    period = min(period, max(sub.shortest_timeout / 10, 0.05))
                if sub.deadlines:
                    sub.expire(now)

    def _read_groups(self) -> list[tuple[str, str]]:
        return [(topic, sub.group) for sub in self._subs for topic in sub.topics]

    def _inbox_read(self) -> tuple[str, str] | None:
        requests = self._requests
        return None if requests._reader is None else (requests.inbox, requests._last)

    @property
    def busy(self) -> bool:
        """Whether a handler is running or an added agent is still being subscribed."""
        return bool(self._hosting) or any(s.inflight for s in self._subs)

    async def idle(self, *, timeout: float = 10.0) -> None:
        """Wait until no handler is running and the journal is written (for tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet = 0
        while quiet < 3:
            if loop.time() > deadline:
                raise TimeoutError(f"the runtime was still busy after {timeout}s")
            busy = any(s.inflight for s in self._subs)
            quiet = 0 if busy else quiet + 1
            await asyncio.sleep(0.02)
        await self.writer.flush()


def _plan(
    agent: Agent,
) -> tuple[dict[str, dict[tuple[str, str], Any]], dict[str, dict[str, bool]]]:
    """Group an agent's handlers by subscription mode; raise UsageError for duplicates."""
    by_mode: dict[str, dict[tuple[str, str], Any]] = {}
    from_start: dict[str, dict[str, bool]] = {}
    for spec, types in agent.handlers():
        handlers = by_mode.setdefault(spec.mode, {})
        starts = from_start.setdefault(spec.mode, {})
        for cls in types:
            key = (spec.topic, cls.message_type)
            if key in handlers:
                raise UsageError(
                    f"agent {agent.name!r} has two handlers for {cls.message_type!r} on "
                    f"topic {spec.topic!r}"
                )
            handlers[key] = (spec, cls)
        default = spec.mode == "shared"
        starts[spec.topic] = default if spec.from_start is None else spec.from_start
    return by_mode, from_start
