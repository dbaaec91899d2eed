"""One agent's read loop: read, decode, dispatch, retry, dead-letter, claim, lease.

Why reads are sized by free handler slots: an entry read but not yet handled sits in
this consumer's pending list with its idle clock running; reading more than we can
handle would let other consumers claim entries we still intend to handle.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from ._decoding import decode_entry, failure, try_decode, worded
from ._hooks import NullTracer
from ._json import jsonable
from ._runner import Runner
from ._supervise import supervise
from .agent import Agent, HandlerSpec
from .context import Context, Scope, reset_scope, set_scope
from .envelope import Envelope
from .errors import (
    GroupNotFound,
    HandlerTimeout,
    Reject,
    TransportClosed,
    TransportError,
    TransportUnavailable,
)
from .journal import record
from .message import Message, lookup_type
from .redact import redact_text
from .transports import Ack, Delivery, JournalEntry

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("agentbus.runtime")

ERROR_TYPE = "agentbus.Error"
ORPHAN_RUN = "orphans"


class Subscription:
    """The handlers of one agent instance that share a mode (one consumer group)."""

    def __init__(
        self,
        runtime: Runtime,
        agent: Agent,
        group: str,
        mode: str,
        handlers: dict[tuple[str, str], tuple[HandlerSpec, type[Message]]],
        from_start: dict[str, bool],
    ) -> None:
        self.rt = runtime
        self.agent = agent
        self.agent_name = agent.name  # read on every delivery; the property is not free
        self.group = group
        self.mode = mode
        self.handlers = handlers
        self.topics = sorted({topic for topic, _ in handlers})
        self._from_start = from_start
        #: Who received a delivery, written on each of its records: the consumer, and for
        #: a broadcast subscription its per-instance group, so a trace shows every
        #: replica's deliveries apart (a shared group's are one delivery of the agent).
        self.replica: dict[str, str] = {"consumer": runtime.consumer}
        if mode == "broadcast":
            self.replica["group"] = group
        #: Per topic, the most deliveries any of its handlers allows (checked before decoding).
        self._limits: dict[str, int] = {}
        for (topic, _), (spec, _) in handlers.items():
            allowed = spec.max_attempts or runtime.max_attempts
            self._limits[topic] = max(allowed, self._limits.get(topic, 0))
        concurrency = agent.concurrency or runtime.concurrency
        self.concurrency = concurrency
        # A runner per topic: handlers stuck on one topic use up that topic's slots only,
        # so the agent's other topics keep flowing. One event wakes the reader when any
        # of them has room.
        released = asyncio.Event()
        self._runners = {t: Runner(self._dispatch, concurrency, released) for t in self.topics}
        self._released = released
        #: Deadline (loop time) of each handler attempt in progress that has a timeout;
        #: the runtime's watchdog interrupts the suspended ones past theirs.
        self.deadlines: dict[tuple[str, str], float] = {}
        self._expired: set[tuple[str, str]] = set()
        limits = [
            spec.timeout if spec.timeout is not None else runtime.handler_timeout
            for spec, _ in handlers.values()
        ]
        #: The shortest handler timeout here (``None``: no handler has one).
        self.shortest_timeout = min((t for t in limits if t is not None), default=None)
        self._traced = not isinstance(runtime.tracer, NullTracer)
        self._stopping = False  # a flag, not an Event: one per hosted agent instance
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await self._create_groups()
        self._task = supervise(self._loop, f"agentbus-read-{self.group}")

    async def _create_groups(self) -> None:
        for topic in self.topics:
            await self.rt.transport.create_group(
                topic, self.group, from_start=self._from_start[topic]
            )

    def stop_reading(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()

    async def finish(self, grace: float) -> int:
        """Wait up to ``grace`` s for in-flight handlers; cancel the rest (left pending)."""
        readers = [t for t in (self._task,) if t is not None]
        for task in readers:
            task.cancel()
        # redis-py finishes a cancelled blocking read before it gives up the connection
        # (up to block_ms); do not wait that long. A read that still returns entries
        # leaves them pending for redelivery, and a NOGROUP after the runtime removed a
        # broadcast group is ignored because _stopping is set.
        await asyncio.wait(readers, timeout=0.2)
        left = await asyncio.gather(*(r.finish(grace) for r in self._runners.values()))
        return sum(left)

    @property
    def inflight(self) -> int:
        """Deliveries queued or being handled."""
        return sum(r.busy for r in self._runners.values())

    def expire(self, now: float) -> None:
        """Interrupt suspended handler attempts past their deadline (a failed attempt)."""
        for key, deadline in list(self.deadlines.items()):
            if now >= deadline and key not in self._expired:
                runner = self._runners.get(key[0])
                if runner is not None and runner.interrupt(key):
                    self._expired.add(key)

    # -- reading ---------------------------------------------------------------------------
    async def _loop(self) -> None:
        rt = self.rt
        backoff = 0.05
        recovered = False
        next_claim = time.monotonic() + rt.claim_interval
        cursors = dict.fromkeys(self.topics, "0-0")
        while not self._stopping:
            try:
                if not recovered:
                    # Our own pending entries first: a restart of this consumer resumes them.
                    # Each entry is spawned once: one handled but not yet acked comes back
                    # in the next page and must not be handled again; a short page is the
                    # whole list (re-reading would count a delivery of every entry again).
                    seen: set[tuple[str, str]] = set()
                    while True:
                        await self._slots_free()
                        want = min(r.free() for r in self._runners.values())
                        own = await rt.transport.read_group(
                            self.group,
                            rt.consumer,
                            self.topics,
                            count=want,
                            block_ms=None,
                            pending=True,
                        )
                        fresh = [d for d in own if (d.topic, d.entry_id) not in seen]
                        for d in fresh:
                            seen.add((d.topic, d.entry_id))
                            self._spawn(d)
                        if not fresh or len(own) < want:
                            break
                    recovered = True
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + rt.claim_interval
                    for topic in self.topics:
                        runner = self._runners[topic]
                        if runner.room() < 1:
                            continue  # full: claim on a later round
                        cursors[topic], claimed = await rt.transport.claim_idle(
                            topic,
                            self.group,
                            rt.consumer,
                            min_idle_ms=int(rt.visibility_timeout * 1000),
                            count=runner.free(),
                            cursor=cursors[topic],
                        )
                        for d in claimed:
                            log.info(
                                "claimed %s/%s idle past the visibility timeout", topic, d.entry_id
                            )
                            self._spawn(d)
                topics = await self._slots_free()
                # COUNT applies per stream: the fullest topic read bounds the batch.
                batch = await rt.transport.read_group(
                    self.group,
                    rt.consumer,
                    topics,
                    count=min(rt.batch_size, *(self._runners[t].free() for t in topics)),
                    block_ms=rt.block_ms,
                )
                for d in batch:
                    self._spawn(d)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except TransportClosed:
                return
            except GroupNotFound as exc:
                if self._stopping:
                    return
                log.warning("consumer group %r vanished (%s); recreating it", self.group, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                try:
                    await self._create_groups()
                except TransportError:
                    pass
                recovered = False
            except TransportError as exc:
                log.warning(
                    "reading for %r failed: %s; retrying in %.2fs", self.group, exc, backoff
                )
                await asyncio.sleep(backoff + random.random() * backoff)
                backoff = min(backoff * 2, 5.0)

    async def _slots_free(self) -> list[str]:
        """Wait until a topic has room for a delivery; return the topics that have."""
        while True:
            topics = [t for t, r in self._runners.items() if r.room() > 0]
            if topics:
                return topics
            await self._released.wait()
            self._released.clear()

    def _spawn(self, d: Delivery) -> None:
        self._runners[d.topic].submit(d)

    async def renew_leases(self, older_than: float) -> None:
        """Keep the lease of long handlers, so no one claims what we are still handling.

        Called by the runtime's one lease task (a task per subscription would cost memory
        for every hosted agent instance).
        """
        now = time.monotonic()
        by_topic: dict[str, list[str]] = {}
        for runner in self._runners.values():
            for (topic, entry_id), started in runner.suspended():
                if now - started >= older_than:
                    by_topic.setdefault(topic, []).append(entry_id)
        for topic, ids in by_topic.items():
            try:
                await self.rt.transport.extend_lease(topic, self.group, self.rt.consumer, ids)
            except TransportError as exc:
                log.warning("extending leases on %r failed: %s", topic, exc)

    # -- dispatch ------------------------------------------------------------------------------
    async def _dispatch(self, d: Delivery) -> None:
        rt = self.rt
        # Before decoding: an entry that keeps coming back (say its decoding or handling
        # kills the process) must end here, whatever its content does.
        most = self._limits.get(d.topic, rt.max_attempts)
        if d.delivery_count > most:
            await self._dead_letter(
                d,
                try_decode(d, rt),  # only to file the record under its run
                "max attempts exceeded",
                f"delivered {d.delivery_count} times (max_attempts={most}); "
                "it was never handled to the end",
                d.delivery_count,
            )
            return
        try:
            env = decode_entry(d, rt)
        except Exception as exc:  # any failure to decode or verify: this entry alone
            await self._dead_letter(d, None, *failure("undecodable event", exc), d.delivery_count)
            return
        match = self.handlers.get((d.topic, env.type))
        if match is None:
            if lookup_type(env.type) is None:
                await self._dead_letter(
                    d, env, "unknown message type", repr(env.type), d.delivery_count
                )
            else:
                rt.writer.ack(
                    Ack(d.topic, self.group, d.entry_id),
                    self._entry(env, "ignored", reason=f"no handler for {env.type!r}"),
                )
            return
        spec, cls = match
        try:
            message = cls.model_validate(env.data if env.data is not None else {})
        except Exception as exc:  # invalid, or a validator that raised something else
            why = failure("invalid payload", worded(env, cls, exc))
            await self._dead_letter(d, env, *why, d.delivery_count)
            return
        dedupe_key = rt.transport_keys.dedup(self.agent_name, env.id) if spec.dedupe else None
        if dedupe_key is not None and await self._is_marked(dedupe_key):
            rt.writer.ack(Ack(d.topic, self.group, d.entry_id), self._entry(env, "duplicate"))
            return
        max_attempts = spec.max_attempts or rt.max_attempts
        attempt = d.delivery_count
        if attempt > max_attempts:
            await self._dead_letter(
                d,
                env,
                "max attempts exceeded",
                f"delivered {attempt} times (max_attempts={max_attempts}); the handler never finished",
                attempt,
            )
            return
        journal = rt.journal_enabled  # with it off, not even build the records
        if journal:
            rt.writer.journal(
                JournalEntry(
                    env.runid or ORPHAN_RUN,
                    {  # self._entry(env, "delivered", ...) spelled out: one per delivery
                        "kind": "delivered",
                        "time": time.time(),
                        "event_id": env.id,
                        "type": env.type,
                        "topic": env.topic,
                        "agent": self.agent_name,
                        "attempt": attempt,
                        **self.replica,
                    },
                )
            )
        method = getattr(self.agent, spec.method)
        limit = spec.timeout if spec.timeout is not None else rt.handler_timeout
        key = (d.topic, d.entry_id)
        outages = 0
        while True:
            ctx = Context(rt, self.agent_name, env, attempt)
            scope = Scope(env.runid or ORPHAN_RUN, env.id, self.agent_name, env)
            if dedupe_key is not None:
                scope.outbox = []  # its events are committed with the ack, or not at all
            token = set_scope(scope)
            started = time.perf_counter()
            if limit is not None:
                # Enforced by the runtime's watchdog on handlers that suspend: a timer
                # per delivery would cost more than a fast handler itself.
                self.deadlines[key] = asyncio.get_running_loop().time() + limit
            try:
                try:
                    if self._traced:
                        with rt.tracer.consume(env, self.agent_name, d.topic):
                            result = await method(message, ctx)
                            if result is not None:  # the reply is part of handling (same span)
                                await self._emit(spec, env, result)
                    else:  # the same without entering a no-op context per delivery
                        result = await method(message, ctx)
                        if result is not None:
                            await self._emit(spec, env, result)
                except asyncio.CancelledError:
                    if key not in self._expired:
                        raise  # shutdown: the entry stays pending for a later delivery
                    self._expired.discard(key)
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()  # ours, not a shutdown's: a failed attempt
                    raise HandlerTimeout(
                        f"{type(self.agent).__name__}.{spec.method} did not finish within "
                        f"{limit}s (timeout=)"
                    ) from None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                scope.outbox = None  # a failed attempt's events are never sent
                if isinstance(exc, TransportUnavailable):
                    # The store is down (a restart, a failover): not the handler's fault,
                    # so wait it out, however long, without using up attempts.
                    outages += 1
                    delay = rt.backoff(min(outages, 30))
                    log.warning(
                        "handling %s/%s: %s; again in %.1fs", d.topic, d.entry_id, exc, delay
                    )
                    await asyncio.sleep(delay)
                    continue
                duration = (time.perf_counter() - started) * 1000
                error = redact_text(f"{type(exc).__name__}: {exc}")  # journal, DLQ, logs
                final = isinstance(exc, Reject) or attempt >= max_attempts
                rt.metrics.failed(self.agent_name, d.topic)
                rt.writer.journal(
                    self._entry(
                        env,
                        "failed",
                        attempt=attempt,
                        error=error,
                        error_type=type(exc).__name__,
                        duration_ms=round(duration, 3),
                        final=final,
                    )
                )
                if final:
                    reason = "rejected" if isinstance(exc, Reject) else "handler failed"
                    await self._dead_letter(
                        d, env, reason, error, attempt, reply=(type(exc).__name__, str(exc))
                    )
                    return
                delay = rt.backoff(attempt)
                rt.writer.journal(self._entry(env, "retried", attempt=attempt + 1, delay_s=delay))
                await asyncio.sleep(delay)
                attempt += 1
                continue
            finally:
                reset_scope(token)
                if limit is not None:
                    self.deadlines.pop(key, None)
                    self._expired.discard(key)
            duration = (time.perf_counter() - started) * 1000
            handled = (
                JournalEntry(
                    env.runid or ORPHAN_RUN,
                    {  # self._entry(env, "handled", ...) spelled out: one per delivery
                        "kind": "handled",
                        "time": time.time(),
                        "event_id": env.id,
                        "type": env.type,
                        "topic": env.topic,
                        "agent": self.agent_name,
                        "attempt": attempt,
                        "duration_ms": round(duration, 3),
                        **self.replica,
                    },
                )
                if journal
                else None
            )
            if dedupe_key is not None:
                outbox, scope.outbox = scope.outbox or [], None
                await self._commit(d, env, dedupe_key, outbox, handled)
            else:
                rt.writer.ack(Ack(d.topic, self.group, d.entry_id), handled)
            rt.metrics.handled(self.agent_name, d.topic, duration, env.time)
            return

    async def _is_marked(self, dedupe_key: str) -> bool:
        """The de-dup check, waiting out an outage (it must not cost an attempt)."""
        outages = 0
        while True:
            try:
                return await self.rt.transport.is_marked(dedupe_key)
            except TransportUnavailable as exc:
                outages += 1
                delay = self.rt.backoff(min(outages, 30))
                log.warning("de-dup check failed: %s; again in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def _commit(
        self,
        d: Delivery,
        env: Envelope,
        dedupe_key: str,
        outbox: list[tuple[str, bytes, list[JournalEntry]]],
        handled: JournalEntry | None,
    ) -> None:
        """Write a de-duplicated handler's events, outcome, ack and marker atomically."""
        rt = self.rt
        queued = rt.writer.take_journal()  # queued records (its "delivered") go first
        journal = list(queued)
        for _, _, entries in outbox:
            journal.extend(entries)
        if handled is not None:
            journal.append(handled)
        if not rt.journal_enabled:
            journal = []
        delay = 0.05
        while True:
            try:
                fresh = await rt.transport.commit(
                    Ack(d.topic, self.group, d.entry_id),
                    (dedupe_key, rt.dedupe_ttl),
                    publish=[(topic, payload) for topic, payload, _ in outbox],
                    journal=journal,
                )
                break
            except TransportClosed:
                return
            except TransportError as exc:
                log.warning("committing %s failed: %s; retrying", d.entry_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if fresh:
            for topic, _, _ in outbox:
                rt.metrics.published(topic)
        else:  # another consumer committed this event first: its effects stand alone
            for entry in [*queued, self._entry(env, "duplicate")]:
                rt.writer.journal(entry)  # only the ack was written

    async def _emit(self, spec: HandlerSpec, env: Envelope, result: Any) -> None:
        if not isinstance(result, Message):
            raise TypeError(
                f"handler {type(self.agent).__name__}.{spec.method} returned "
                f"{type(result).__name__!r}; return a Message or None"
            )
        if env.replyto:
            reply_id = await self.rt.publish(
                result,
                env.replyto,
                source=self.agent_name,
                correlationid=env.correlationid or env.id,
            )
            self.rt.writer.journal(self._entry(env, "replied", reply_id=reply_id))
        elif spec.output:
            await self.rt.publish(result, spec.output, source=self.agent_name)
        else:
            log.warning(
                "%s.%s returned a %s but the event was not a request and the handler has no "
                "output topic; the result was dropped",
                type(self.agent).__name__,
                spec.method,
                result.message_type,
            )

    async def _reply_error(self, env: Envelope, error_type: str, message: str) -> None:
        """Tell the requester at once that its request failed (a RemoteError there)."""
        assert env.replyto is not None
        error = Envelope(
            type=ERROR_TYPE,
            source=self.agent_name,
            data={
                "error_type": jsonable(error_type),
                "message": redact_text(jsonable(message)),
                "agent": self.agent_name,
                "event_id": env.id,
            },
            correlationid=env.correlationid or env.id,
        )
        try:
            await self.rt.publish_envelope(error, env.replyto)
        except Exception as exc2:  # never keeps the event from its dead letter
            log.warning("could not send the error reply for %s: %s", env.id, exc2)

    def _entry(self, env: Envelope, kind: str, **fields: Any) -> JournalEntry:
        # record(kind, ...) spelled out: two of these are built for every delivery.
        return JournalEntry(
            env.runid or ORPHAN_RUN,
            {
                "kind": kind,
                "time": time.time(),
                "event_id": env.id,
                "type": env.type,
                "topic": env.topic,
                "agent": self.agent_name,
                **self.replica,
                **fields,
            },
        )

    async def _dead_letter(
        self,
        d: Delivery,
        env: Envelope | None,
        reason: str,
        error: str,
        attempts: int,
        reply: tuple[str, str] | None = None,
    ) -> None:
        """Move the entry to the dead letters; a requester gets the error reply at once.

        ``reply`` is the (error type, message) to answer with; by default the requester
        learns that its request was dead-lettered and why, instead of waiting its timeout.
        """
        rt = self.rt
        # Text from hostile input or a handler's exception may not even be Unicode: a
        # dead letter must always be writable.
        error = jsonable(error)
        if env is not None and env.replyto:
            error_type, message = reply or ("DeadLettered", f"dead-lettered as {reason!r}: {error}")
            await self._reply_error(env, error_type, message)
        payload = (
            d.payload.decode("utf-8", "replace")
            if d.payload is not None
            else repr({k: v[:200] for k, v in d.fields.items()})
        )
        letter = {
            "origin_id": d.entry_id,
            "topic": d.topic,
            "event_id": env.id if env else None,
            "reason": reason,
            "error": error,
            "agent": self.agent_name,
            "group": self.group,
            "attempts": attempts,
            "time": time.time(),
            "payload": payload[: rt.max_event_bytes],
        }
        log.warning("dead-lettered %s/%s for %s: %s", d.topic, d.entry_id, reason, error)
        run_id = env.runid if env is not None and env.runid else ORPHAN_RUN
        journal = [
            JournalEntry(
                run_id,
                record(
                    "dead_lettered",
                    event_id=letter["event_id"],
                    entry_id=d.entry_id,
                    topic=d.topic,
                    agent=self.agent_name,
                    reason=reason,
                    error=error,
                    attempts=attempts,
                    **self.replica,
                ),
            )
        ]
        # Records queued before this one must not land after it.
        journal[:0] = rt.writer.take_journal()
        if not rt.journal_enabled:
            journal = []
        delay = 0.05
        while True:
            try:
                await rt.transport.dead_letter(
                    d.topic, self.group, d.entry_id, letter, journal=journal
                )
                rt.metrics.dead_lettered(self.agent_name, d.topic)
                return
            except TransportClosed:
                return
            except TransportError as exc:
                log.warning("dead-lettering %s failed: %s; retrying", d.entry_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception as exc:  # not the store's fault: something here cannot be written
                if not journal:
                    log.error("dead-lettering %s failed: %s; it stays pending", d.entry_id, exc)
                    return
                log.error("dead-lettering %s with its records failed: %s", d.entry_id, exc)
                for entry in journal:  # the writer sets aside a record it cannot write
                    rt.writer.journal(entry)
                journal = []
