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
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel

from ._calls import Calls, Substitute
from ._cancel import Cancels, cancel_run
from ._decoding import Decoder
from ._delivery import Services
from ._hooks import Metrics, NullTracer, Tracer
from ._hosting import Hosting
from ._publishing import Publishing
from ._questions import Questions, QuestionSubstitute, Wakeups, answer_question
from ._quiet import until_quiet
from ._requests import Requests
from ._resume import Resumer
from ._settings import Settings
from ._signals import on_stop_signals
from ._subscription import plan
from ._writer import Writer
from .agent import Agent
from .app import App
from .budget import Budget, Budgets
from .context import CallKind, Context
from .envelope import DEFAULT_MAX_EVENT_BYTES, new_id
from .errors import TransportClosed, UsageError
from .journal import Journal
from .keys import Keys
from .message import Message
from .partitions import PartitionTable
from .retention import Maintenance, Retention
from .runs import Run
from .signing import Signer
from .transports import Question, RunInfo, Transport, open_transport

__all__ = ["Runtime"]

log = logging.getLogger("agentbus.runtime")
M = TypeVar("M", bound=Message)
T = TypeVar("T", bound=BaseModel)


class Runtime(Publishing):
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
    ``partitions={"orders": 8}`` declares partitioned topics, handled in order per
    partition key (:mod:`agentbus.partitions`); a dead replica's partitions are taken
    over after ``partition_lease`` seconds.
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
        partitions: Mapping[str, int] | None = None,
        partition_lease: float = 10.0,
    ) -> None:
        options: dict[str, Any] = {} if prefix is None else {"prefix": prefix}
        self.transport: Transport = transport or open_transport(url, **options)
        self._owns_transport = transport is None
        self.transport_keys: Keys = self.transport.keys
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"
        self._settings = Settings(
            consumer=self.consumer,
            concurrency=concurrency,
            batch_size=batch_size,
            block_ms=block_ms,
            visibility_timeout=visibility_timeout,
            max_attempts=max_attempts,
            retry_backoff=retry_backoff,
            grace_period=grace_period,
            handler_timeout=handler_timeout,
            recording=journal,
            max_event_bytes=max_event_bytes,
            dedupe_ttl=dedupe_ttl,
            partition_lease=partition_lease,
        )
        #: Partitioned topics: declared here, or looked up in the transport.
        self.partitions = PartitionTable(self.transport, partitions)
        self.tracer: Tracer = tracer or NullTracer()
        #: Signs what this runtime publishes and verifies what it receives (``None``: off).
        self.signer: Signer | None = signer if signer is not None else Signer.from_env()
        if self.signer is not None and self.transport.store.signer is None:
            # Records are signed where the transport serialises them (one place for all
            # of them). A transport shared by several runtimes signs with the first signer.
            self.transport.store.signer = self.signer
        self.metrics = Metrics(self.tracer.metrics)
        self.writer = Writer(self.transport, recording=journal)
        #: Reads a crashed attempt's calls for a redelivered delivery (one per runtime:
        #: deliveries claimed together share its outbox repair).
        self._resumer = Resumer(self.transport.store)
        #: The runs known cancelled here; their deliveries are acked unhandled.
        self._cancels = Cancels()
        self._calls = Calls(self.writer, self.tracer)
        self._budgets = Budgets(self.transport.store, self.writer.record)
        self._calls.budgets = self._budgets
        self._agents: list[Agent] = []
        self._hosted = Hosting()
        self._hosting: set[asyncio.Task[None]] = set()  # agents being added
        self._requests = Requests(
            self,
            self.transport,
            self._settings,
            self.signer,
            on_inbox=lambda: self.maintenance.owned_changed(),
        )
        self.retention = retention or Retention()
        #: Trims acknowledged entries, removes idle consumers, prunes old runs.
        self.maintenance = Maintenance(
            self.transport,
            self.retention,
            self._hosted.read_groups,
            lambda: self._requests.reading,
            consumer=self.consumer,
            owned=lambda: self._hosted.owned(self._requests.reading),
        )
        #: Questions to people (ctx.ask_human), and the poll that resumes answered ones.
        self._questions = Questions(self.transport.store, self.writer)
        self._wakeups = Wakeups(
            self.transport,
            self._hosted.shared_agents,
            self.signer,
            self.retention.wakeups,
            lambda: self.writer.recording,
        )
        self._started = False
        self._closed = False
        self._stop_requested = asyncio.Event()

    @property
    def settings(self) -> Settings:
        """The runtime's tuning, frozen; assign a changed copy before :meth:`start`.

        Raises :class:`UsageError` when assigned after the runtime started.
        """
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        if self._started:
            raise UsageError("settings can only be replaced before the runtime starts")
        self._settings = value
        self._requests.settings = value
        self.writer.recording = value.recording

    @property
    def call_substitute(self) -> Substitute | None:
        """Answers model/tool calls from a recording (replay installs one); ``None``: live."""
        return self._calls.substitute

    @call_substitute.setter
    def call_substitute(self, value: Substitute | None) -> None:
        self._calls.substitute = value

    @property
    def question_substitute(self) -> QuestionSubstitute | None:
        """Answers ``ask_human`` from a recording (replay installs one); ``None``: people."""
        return self._questions.substitute

    @question_substitute.setter
    def question_substitute(self, value: QuestionSubstitute | None) -> None:
        self._questions.substitute = value

    # -- lifecycle ----------------------------------------------------------------------
    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Connect and start hosting the agents added so far.

        Raises ``TransportUnavailable`` naming the URL when the store cannot be reached.
        When it raises after connecting, what it started is stopped and it is closed.
        """
        if self._started:
            return
        await self.transport.connect()
        try:
            await self.partitions.declare()
            self.writer.start()
            self._hosted.start(self._settings.visibility_timeout)
            self._hosted.watch_cancels(self._cancels, self.transport)
            self.maintenance.start()
            self._started = True
            self.metrics.start(self.transport, self._hosted.read_groups)
            for agent in list(self._agents):
                await self._host(agent)
            self._wakeups.start()  # answered questions of the agents hosted here
        except BaseException:  # stop what started (`async with` skips __aexit__ here)
            self._started = True
            with contextlib.suppress(Exception):  # the start's own error is the one to show
                await self.aclose(grace=0)
            raise

    def add(self, *agents: Agent) -> None:
        """Host ``agents`` here (started at once if the runtime is running).

        Raises :class:`UsageError` for a non-agent or an agent without handlers.
        """
        for agent in agents:
            if not isinstance(agent, Agent):
                raise UsageError(f"expected Agent instances, got {type(agent).__name__!r}")
            plan(agent)  # validate annotations and duplicates now, not at the first event
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
        await agent.on_start(Context(self, agent.name))
        await self._hosted.host(self._services(), agent)
        if agent.name in self._hosted.broadcasting():
            self.maintenance.owned_changed()  # so its groups are pruned if this process dies

    def _services(self) -> Services:
        """What the delivery path uses (the settings as they are at start)."""
        settings = self._settings
        return Services(
            self,
            self.transport,
            self.writer,
            self.metrics,
            self.tracer,
            settings,
            self.transport_keys,
            Decoder(settings.max_event_bytes, self.signer),
            self.partitions,
            self._resumer,
            self._cancels,
        )

    async def stop(self, grace: float | None = None) -> None:
        """Stop reading, let in-flight handlers finish within ``grace`` seconds.

        Handlers still running after the grace period are cancelled; their events stay
        pending and are delivered again (to this consumer on restart, or claimed by
        another after the visibility timeout).
        """
        if not self._started or self._closed:
            return
        grace = self._settings.grace_period if grace is None else grace
        if self._hosting:
            await asyncio.gather(*list(self._hosting), return_exceptions=True)
        await self.maintenance.aclose()
        await self._wakeups.aclose()
        cancelled = await self._hosted.stop(grace)
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
        await self._hosted.unsubscribe(self.transport)
        await self.maintenance.withdraw()

    async def aclose(self, grace: float | None = None) -> None:
        """Stop (``grace``: default the grace period); close the transport if we opened it."""
        if self._closed:
            return
        await self.stop(grace)
        self._closed = True
        if self._owns_transport:
            await self.transport.aclose()

    def request_stop(self) -> None:
        """Ask :meth:`serve` to return (safe to call from a signal handler)."""
        self._stop_requested.set()

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Host the agents until SIGINT/SIGTERM or :meth:`request_stop`, then stop."""
        await self.start()
        try:
            with on_stop_signals(self.request_stop, enabled=handle_signals):
                await self._stop_requested.wait()
        finally:
            await self.stop()

    # -- runs and journal ---------------------------------------------------------------------
    def run(
        self,
        name: str | App,
        *,
        meta: dict[str, Any] | None = None,
        run_id: str | None = None,
        budget: Budget | None = None,
    ) -> Run:
        """A new run: ``async with rt.run("name") as run`` records it start to end.

        ``budget`` limits the run's tokens, cost, model and tool calls and wall clock,
        across every process handling its events (:class:`~agentbus.Budget`).

        Given an :class:`App` instead of a name, the run is named after it and records
        how the app is loaded (``meta["app"]``), so :func:`~agentbus.replay.replay_run`
        can re-execute it without being told.
        """
        if isinstance(name, App):
            app, name = name, name.name
            budget = budget if budget is not None else app.budget
            meta = {"app": app.ref, **(meta or {})} if app.ref else meta
        run = self._new_run(name, meta=meta, run_id=run_id)
        if budget is not None:
            run.meta["budget"] = budget.to_meta(run.info.started)
        self._budgets.know(run.run_id, run.meta.get("budget"))
        return run

    async def cancel_run(self, run_id: str, *, by: str = "api") -> bool:
        """Cancel run ``run_id`` everywhere (see docs/durability.md, "Cancelling a run").

        Marks it ``cancelled`` in the store (a ``run_finished`` record names ``by``);
        every process then cancels its handlers of the run and acks its queued events
        unhandled. Returns False when the run had already ended; raises ``KeyError``
        for an unknown run.
        """
        done = await cancel_run(self.transport.store, run_id, by=by)
        if done:
            self._cancels.cancelled(run_id)  # this process's handlers now, not at the poll
        return done

    # -- questions to people -------------------------------------------------------------------
    async def ask_human(
        self,
        question: BaseModel,
        *,
        expect: type[T],
        timeout: timedelta | float | None = None,
        agent: str | None = None,
        summary: str | None = None,
    ) -> T:
        """Ask a person from the handler running now (see :meth:`Context.ask_human`)."""
        return await self._questions.ask(
            question, expect=expect, timeout=timeout, agent=agent, summary=summary
        )

    async def answer(
        self, run_id: str, question_id: str, answer: Any, *, by: str = "api"
    ) -> Question:
        """Answer question ``question_id`` (or a unique prefix) of run ``run_id``.

        ``answer`` is the JSON-ready value (or a pydantic model) the handler expects; it
        is checked now. The run resumes on a runtime hosting the asking agent within its
        wake-up interval (:attr:`Retention.wakeups`, 2 s by default). Returns the
        question as answered. Raises :class:`~agentbus.UnknownQuestion`,
        :class:`~agentbus.QuestionClosed` (answered already, timed out, or withdrawn) or
        :class:`~agentbus.InvalidAnswer`.
        """
        if isinstance(answer, BaseModel):
            answer = answer.model_dump(mode="json")
        return await answer_question(self.transport.store, run_id, question_id, answer, by=by)

    async def pending(self, run_id: str | None = None) -> list[Question]:
        """The questions waiting for an answer (of ``run_id`` only, when given), oldest
        first (what ``agentbus pending`` lists)."""
        return await self.transport.store.list_questions(run_id=run_id)

    def _new_run(
        self,
        name: str,
        *,
        meta: dict[str, Any] | None = None,
        run_id: str | None = None,
        status: str = "running",
    ) -> Run:
        return Run(
            self,
            name,
            writer=self.writer,
            tracer=self.tracer,
            meta=meta,
            run_id=run_id,
            status=status,
        )

    @property
    def journal(self) -> Journal:
        """Read access to the recorded runs."""
        return Journal(self.transport)

    async def save_run(self, info: RunInfo) -> None:
        """Store a run's header (name, status, times, meta)."""
        await self.writer.save_run(info)

    async def note(self, step: str, *, agent: str | None = None, **details: Any) -> None:
        """Record a ``step`` note in the current run's journal (and a tracing span)."""
        self._calls.note(step, agent, details)

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
        return await self._calls.invoke(kind, name, request, call, agent)

    # -- helpers ------------------------------------------------------------------------------------
    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (exponential, with full jitter on top half)."""
        return self._settings.backoff(attempt)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed("the runtime is closed")

    @property
    def agents(self) -> Sequence[Agent]:
        return tuple(self._agents)

    @property
    def busy(self) -> bool:
        """Whether a handler is running or an added agent is still being subscribed."""
        return bool(self._hosting) or self._hosted.inflight

    async def idle(self, *, timeout: float = 10.0, drained: bool = False) -> None:
        """Wait until no handler is running and the journal is written.

        With ``drained``, also until every consumer group in the store has read and
        acknowledged every entry (what replay waits for: the run has come to rest).
        Raises ``TimeoutError`` when that has not happened within ``timeout`` seconds.
        """
        admin = self.transport.admin if drained else None
        await until_quiet(lambda: self.busy, self.writer.flush, timeout, drained=admin)
