"""One delivery, from entry to outcome: decode, match, validate, then run attempts.

Each step either hands the delivery on or ends it through :class:`Outcomes` (ack,
commit or dead letter); nothing here writes an outcome by itself. A handler attempt
that meets an unreachable store is run again when the store is back, without using up
an attempt; one that fails is retried with backoff until ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from ._cancel import RunCancelled
from ._decoding import failure, worded
from ._delivery import ORPHAN_RUN, Services, Stamp
from ._outcome import Outcomes
from ._questions import RESUME_ATTR, Parked
from ._resume import ResumeTape
from ._retry import retry_io
from .agent import Agent, HandlerSpec
from .context import Context, Scope, reset_scope, set_scope
from .envelope import Envelope, validate_payload
from .errors import BudgetExceeded, HandlerTimeout, Reject, TransportUnavailable
from .message import Message, lookup_type
from .redact import redact_text
from .transports import Delivery

__all__ = ["Dispatcher", "Handlers"]

log = logging.getLogger("agentbus.runtime")

#: (topic, message type) -> (the handler's spec, its message class).
Handlers = dict[tuple[str, str], tuple[HandlerSpec, type[Message]]]


@dataclass(slots=True)
class _Attempt:
    """One delivery being handled: what every attempt at it shares."""

    d: Delivery
    env: Envelope
    spec: HandlerSpec
    message: Message
    number: int
    most: int
    dedupe_key: str | None
    limit: float | None
    #: (topic, entry id): how the runner and the watchdog know this delivery.
    key: tuple[str, str]
    started: float = 0.0
    scope: Scope | None = None
    #: What a crashed attempt at this delivery recorded (its first attempt here only).
    resume: ResumeTape | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


class _Refused(Exception):
    """A delivery that ends before any attempt: dead-lettered, or acked as unmatched."""

    def __init__(
        self,
        env: Envelope | None,
        reason: str,
        error: str,
        *,
        unmatched: bool = False,
        silent: bool = False,
    ) -> None:
        super().__init__(reason)
        self.env, self.reason, self.error, self.unmatched = env, reason, error, unmatched
        #: Acked without a record: a woken event for another agent (not ours to see).
        self.silent = silent


class Dispatcher:
    """Handles the deliveries of one subscription (called by its runners)."""

    __slots__ = (
        "_agent",
        "_handlers",
        "_limits",
        "_out",
        "_parks",
        "_s",
        "_stamp",
        "_traced",
        "active",
        "deadlines",
        "dropped",
        "expired",
        "logical",
    )

    def __init__(
        self,
        services: Services,
        agent: Agent,
        stamp: Stamp,
        handlers: Handlers,
        outcomes: Outcomes,
    ) -> None:
        self._s = services
        self._agent = agent
        self._stamp = stamp
        self._handlers = handlers
        self._out = outcomes
        self._traced = services.traced  # read on every delivery; the property is not free
        #: Whether ask_human may park this subscription's deliveries (not broadcast ones:
        #: every replica would ask, and their groups go with them).
        self._parks = "group" not in stamp.replica
        #: Per topic, the most deliveries any of its handlers allows (checked before decoding).
        self._limits: dict[str, int] = {}
        for (topic, _), (spec, _) in handlers.items():
            allowed = spec.max_attempts or services.settings.max_attempts
            self._limits[topic] = max(allowed, self._limits.get(topic, 0))
        #: Deadline (loop time) of each handler attempt in progress that has a timeout;
        #: the runtime's watchdog interrupts the suspended ones past theirs.
        self.deadlines: dict[tuple[str, str], float] = {}
        #: Partition stream -> the topic it carries (``orders#3`` -> ``orders``).
        self.logical: dict[str, str] = {}
        #: Attempts the watchdog interrupted (a failed attempt, not a shutdown).
        #: (Made on first use: most subscriptions never time a handler out.)
        self.expired: set[tuple[str, str]] | None = None
        #: The run of each handler attempt in progress (to cancel a cancelled run's).
        self.active: dict[tuple[str, str], str] = {}
        #: Attempts interrupted because their run was cancelled.
        self.dropped: set[tuple[str, str]] = set()

    def add_partitions(self, topic: str, streams: list[str]) -> None:
        """Handle deliveries from ``streams`` (``topic``'s partitions) as ``topic``'s."""
        for stream in streams:
            self.logical[stream] = topic
            if topic in self._limits:
                self._limits[stream] = self._limits[topic]

    async def __call__(self, d: Delivery) -> None:
        # Before decoding: an entry that keeps coming back (say its decoding or handling
        # kills the process) must end here, whatever its content does.
        most = self._limits.get(d.topic, self._s.settings.max_attempts)
        if d.delivery_count > most:
            await self._out.dead_letter(
                d,
                # only to file the record under its run
                self._s.decoder.try_decode(d, self.logical.get(d.topic)),
                "max attempts exceeded",
                f"delivered {d.delivery_count} times (max_attempts={most}); "
                "it was never handled to the end",
                d.delivery_count,
            )
            return
        try:
            attempt = self._screen(d)
        except _Refused as refused:
            if refused.silent:
                self._out.ack(d, None)
            elif refused.unmatched:
                await self._unmatched(d, refused.env)
            else:
                await self._out.dead_letter(
                    d, refused.env, refused.reason, refused.error, d.delivery_count
                )
            return
        await self._handle(attempt)

    # -- decode, match, validate ---------------------------------------------------------------
    def _screen(self, d: Delivery) -> _Attempt:
        """The delivery ready to handle; raises :class:`_Refused` when it ends here.

        Not a coroutine: nothing here waits, and a coroutine per delivery is not free.
        """
        topic = self.logical.get(d.topic, d.topic) if self.logical else d.topic
        try:
            env = self._s.decoder.decode(d, topic)
        except Exception as exc:  # any failure to decode or verify: this entry alone
            raise _Refused(None, *failure("undecodable event", exc)) from None
        if (
            env.extensions
            and env.extensions.get(RESUME_ATTR, self._stamp.agent) != self._stamp.agent
        ):
            raise _Refused(env, "", "", silent=True)  # woken up for another agent
        match = self._handlers.get((topic, env.type))
        if match is None:
            raise _Refused(env, "", "", unmatched=True)
        spec, cls = match
        try:
            message = validate_payload(env, cls)
        except Exception as exc:  # invalid, or a validator that raised something else
            raise _Refused(env, *failure("invalid payload", worded(env, cls, exc))) from None
        settings = self._s.settings
        return _Attempt(
            d,
            env,
            spec,
            message,
            number=d.delivery_count,
            most=spec.max_attempts or settings.max_attempts,
            dedupe_key=self._s.keys.dedup(d.topic, self._stamp.agent, env.id)
            if spec.dedupe
            else None,
            limit=spec.timeout if spec.timeout is not None else settings.handler_timeout,
            key=(d.topic, d.entry_id),
        )

    async def _unmatched(self, d: Delivery, env: Envelope | None) -> None:
        assert env is not None
        if lookup_type(env.type) is None:
            await self._out.dead_letter(
                d, env, "unknown message type", repr(env.type), d.delivery_count
            )
        else:
            reason = f"no handler for {env.type!r}"
            self._out.ack(d, self._stamp.record(env, "ignored", reason=reason))

    # -- attempts ----------------------------------------------------------------------------------
    async def _handle(self, a: _Attempt) -> None:
        if self._cancelled(a):
            return
        if a.dedupe_key is not None and await self._is_marked(a.dedupe_key):
            self._out.ack(a.d, self._stamp.record(a.env, "duplicate"))
            return
        if a.number > a.most:
            await self._out.dead_letter(
                a.d,
                a.env,
                "max attempts exceeded",
                f"delivered {a.number} times (max_attempts={a.most}); the handler never finished",
                a.number,
            )
            return
        if self._s.writer.recording:  # with it off, not even build the records
            # Woken up after a question was answered: a first delivery of this entry, but
            # the handler ran before, so its calls are answered from the journal too.
            woken = bool(a.env.extensions) and RESUME_ATTR in a.env.extensions
            # Redelivered: a crashed attempt's calls are not made again. Only in a run:
            # the records of run-less events share one journal, too big to read each time.
            if (a.number > 1 or woken) and a.env.runid:
                a.resume = await self._s.resumer.tape(a.env.runid, a.env.id, self._stamp.agent)
            if woken:
                self._s.writer.record(
                    self._stamp.record(a.env, "delivered", attempt=a.number, woken=True)
                )
            else:
                self._s.writer.record(self._stamp.delivered(a.env, a.number))
        while True:
            if a.number > 1 and self._cancelled(a):  # cancelled during a retry's backoff
                return
            try:
                try:
                    await self._attempt(a)  # no retry wrapper per delivery: the common case
                except TransportUnavailable as exc:
                    await self._outage(a, exc)
            except Parked as parked:
                # Acked with no de-dup marker, not retried nor dead-lettered: it waits in
                # the store for its answer, and is re-published when it comes.
                record = self._stamp.record(
                    a.env,
                    "parked",
                    attempt=a.number,
                    question_id=parked.question_id,
                    duration_ms=round(a.elapsed_ms(), 3),
                )
                self._out.ack(a.d, record)
                return
            except asyncio.CancelledError:
                raise
            except RunCancelled:
                # Acked, not retried nor dead-lettered: the run wants no more work.
                reason = self._s.cancels.runs.get(a.env.runid or "", "run cancelled")
                self._out.ack(a.d, self._stamp.record(a.env, "ignored", reason=reason))
                return
            except Exception as exc:
                # Still in the event's scope: an error reply belongs to its run and trace.
                token = set_scope(a.scope)
                try:
                    if await self._failed(a, exc):
                        return
                finally:
                    reset_scope(token)
                a.number += 1
                continue
            await self._succeeded(a)
            return

    def _cancelled(self, a: _Attempt) -> bool:
        """Ack ``a`` unhandled when its run is known cancelled (a set lookup, no round trip)."""
        reason = self._s.cancels.runs.get(a.env.runid) if a.env.runid else None
        if reason is None:
            return False
        self._out.ack(a.d, self._stamp.record(a.env, "ignored", reason=reason))
        return True

    async def _outage(self, a: _Attempt, exc: TransportUnavailable) -> None:
        """The store is down (a restart, a failover): not the handler's fault, so wait it
        out, however long, and run the handler again without using up an attempt."""
        delays = self._s.settings.outage_delay
        what = f"handling {a.d.topic}/{a.d.entry_id}"
        log.warning("%s failed: %s; again in %.2fs", what, exc, delays(1))
        await asyncio.sleep(delays(1))
        await retry_io(
            lambda: self._attempt(a),
            what=what,
            delays=lambda n: delays(n + 1),
            retry_on=TransportUnavailable,
        )

    async def _is_marked(self, dedupe_key: str) -> bool:
        """The de-dup check, waiting out an outage (it must not cost an attempt)."""
        return await retry_io(
            lambda: self._s.transport.is_marked(dedupe_key),
            what="de-dup check",
            delays=self._s.settings.outage_delay,
            retry_on=TransportUnavailable,
        )

    async def _attempt(self, a: _Attempt) -> None:
        """Call the handler once, in the event's scope, under its deadline."""
        env = a.env
        ctx = Context(self._s.bus, self._stamp.agent, env, a.number)
        a.scope = scope = Scope(env.runid or ORPHAN_RUN, env.id, self._stamp.agent, env)
        if a.resume is not None:
            # Only the first attempt here resumes: a retry after a failure calls live.
            scope.resume, a.resume = a.resume, None
        if a.dedupe_key is not None:
            scope.outbox = []  # its events are committed with the ack, or not at all
        if self._parks and a.d.payload is not None:
            scope.parking = (a.d.topic, a.d.payload)
        token = set_scope(scope)
        a.started = time.perf_counter()
        if env.runid:
            self.active[a.key] = env.runid
        if a.limit is not None:
            # Enforced by the runtime's watchdog on handlers that suspend: a timer per
            # delivery would cost more than a fast handler itself.
            self.deadlines[a.key] = asyncio.get_running_loop().time() + a.limit
        try:
            if self._traced:
                with self._s.tracer.consume(env, self._stamp.agent, a.d.topic):
                    await self._run_handler(a, ctx)  # the reply is part of handling
            else:  # the same without a no-op context or a coroutine more per delivery
                result = await getattr(self._agent, a.spec.method)(a.message, ctx)
                if result is not None:
                    await self._emit(a.spec, env, result)
        except Parked:
            scope.outbox = None  # the resumed handler publishes them (once, if de-duplicated)
            raise
        except asyncio.CancelledError:
            if a.key in self.dropped:
                self._dropped(a)  # raises RunCancelled
            self._timed_out(a)  # raises HandlerTimeout, or re-raises a shutdown's
        except Exception:
            scope.outbox = None  # a failed attempt's events are never sent
            raise
        finally:
            reset_scope(token)
            if self.active.pop(a.key, None) is not None and self.dropped:
                self.dropped.discard(a.key)  # a handler that swallowed our cancel
            if a.limit is not None:
                self.deadlines.pop(a.key, None)
                if self.expired:
                    self.expired.discard(a.key)

    def _dropped(self, a: _Attempt) -> None:
        """Called on our cancellation of a cancelled run's handler: not a shutdown."""
        self.dropped.discard(a.key)
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        if a.scope is not None:
            a.scope.outbox = None  # its events are never sent
        reason = self._s.cancels.runs.get(a.env.runid or "", "run cancelled")
        raise RunCancelled(f"run {a.env.runid} was stopped: {reason}")

    def _timed_out(self, a: _Attempt) -> None:
        """Called on a cancellation: ours (the watchdog's) is a failed attempt."""
        if not self.expired or a.key not in self.expired:
            raise  # shutdown: the entry stays pending for a later delivery
        self.expired.discard(a.key)
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # ours, not a shutdown's: a failed attempt
        if a.scope is not None:
            a.scope.outbox = None  # a failed attempt's events are never sent
        raise HandlerTimeout(
            f"{type(self._agent).__name__}.{a.spec.method} did not finish within "
            f"{a.limit}s (timeout=)"
        ) from None

    async def _run_handler(self, a: _Attempt, ctx: Context) -> None:
        result = await getattr(self._agent, a.spec.method)(a.message, ctx)
        if result is not None:
            await self._emit(a.spec, a.env, result)

    async def _emit(self, spec: HandlerSpec, env: Envelope, result: Any) -> None:
        if not isinstance(result, Message):
            raise TypeError(
                f"handler {type(self._agent).__name__}.{spec.method} returned "
                f"{type(result).__name__!r}; return a Message or None"
            )
        bus, agent = self._s.bus, self._stamp.agent
        if env.replyto:
            reply_id = await bus.publish(
                env.replyto, result, source=agent, correlationid=env.correlationid or env.id
            )
            self._s.writer.record(self._stamp.record(env, "replied", reply_id=reply_id))
        elif spec.output:
            await bus.publish(spec.output, result, source=agent)
        else:
            log.warning(
                "%s.%s returned a %s but the event was not a request and the handler has no "
                "output topic; the result was dropped",
                type(self._agent).__name__,
                spec.method,
                result.message_type,
            )

    # -- how an attempt ended ----------------------------------------------------------------------
    async def _failed(self, a: _Attempt, exc: Exception) -> bool:
        """Record a failed attempt; dead-letter on the last one (then ``True``)."""
        duration = a.elapsed_ms()
        error = redact_text(f"{type(exc).__name__}: {exc}")  # journal, DLQ, logs
        # A budget refusal is final too: a retry would only be refused again.
        final = isinstance(exc, (Reject, BudgetExceeded)) or a.number >= a.most
        self._s.metrics.failed(self._stamp.agent, a.d.topic)
        self._s.writer.record(
            self._stamp.record(
                a.env,
                "failed",
                attempt=a.number,
                error=error,
                error_type=type(exc).__name__,
                duration_ms=round(duration, 3),
                final=final,
            )
        )
        if final:
            reason = (
                "rejected"
                if isinstance(exc, Reject)
                else "budget exceeded"
                if isinstance(exc, BudgetExceeded)
                else "handler failed"
            )
            reply = (type(exc).__name__, str(exc))
            await self._out.dead_letter(a.d, a.env, reason, error, a.number, reply=reply)
            return True
        delay = self._s.settings.backoff(a.number)
        self._s.writer.record(
            self._stamp.record(a.env, "retried", attempt=a.number + 1, delay_s=delay)
        )
        await asyncio.sleep(delay)
        return False

    async def _succeeded(self, a: _Attempt) -> None:
        duration = a.elapsed_ms()
        handled = (
            self._stamp.handled(a.env, a.number, round(duration, 3))
            if self._s.writer.recording
            else None
        )
        if a.dedupe_key is not None and a.scope is not None:
            outbox, a.scope.outbox = a.scope.outbox or [], None
            await self._out.commit(a.d, a.env, a.dedupe_key, outbox, handled)
        else:
            self._out.ack(a.d, handled)
        self._s.metrics.handled(self._stamp.agent, a.d.topic, duration, a.env.time)
