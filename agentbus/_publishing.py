"""Publishing and requests, the part of :class:`~agentbus.runtime.Runtime` that sends.

A mixin of the runtime's (kept apart to keep ``runtime.py`` readable): it uses the
runtime's transport, writer, tracer, signer, partition table and request inbox, declared
below for the type checker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, overload

from .context import Scope, current_scope
from .envelope import Envelope
from .keys import validate_topic
from .message import Message, topic_first
from .records import RESUMED_PUBLISH_STEP, published
from .transports import JournalEntry

if TYPE_CHECKING:
    from ._hooks import Metrics, Tracer
    from ._requests import Requests
    from ._settings import Settings
    from ._writer import Writer
    from .partitions import PartitionTable
    from .runs import Run
    from .signing import Signer
    from .transports import Transport

__all__ = ["Publishing"]

M = TypeVar("M", bound=Message)


class Publishing:
    """``publish``, ``publish_envelope`` and ``request`` of the runtime."""

    if TYPE_CHECKING:
        transport: Transport
        writer: Writer
        tracer: Tracer
        signer: Signer | None
        metrics: Metrics
        partitions: PartitionTable
        _settings: Settings
        _requests: Requests

        def _check_open(self) -> None: ...

        def _new_run(
            self,
            name: str,
            *,
            meta: dict[str, Any] | None = None,
            run_id: str | None = None,
            status: str = ...,
        ) -> Run: ...

        async def note(self, step: str, *, agent: str | None = None, **details: Any) -> None: ...

    # -- publishing -------------------------------------------------------------------------
    async def publish(
        self,
        topic: str,
        message: Message,
        *,
        key: str | None = None,
        subject: str | None = None,
        source: str | None = None,
        **attributes: Any,
    ) -> str:
        """Publish ``message`` to ``topic``; returns the event id.

        The topic comes first, as in every call that names where something goes
        (``request(topic, message)`` too); the 0.1 order ``publish(message, topic)`` still
        works with a ``DeprecationWarning``. Inside a handler or a run the event carries
        the run id and the causing event. Outside both, it starts a run of its own.
        Raises ``MessageTooLarge`` or ``TransportError``; a publish that returned is stored.
        """
        if not isinstance(topic, str):  # the 0.1 order, or a mistake
            topic, message = topic_first(topic, message, "publish")
        validate_topic(topic)
        env = Envelope.for_message(
            message, source=source or "client", partitionkey=key, subject=subject, **attributes
        )
        return await self.publish_envelope(topic, env)

    async def publish_envelope(
        self,
        topic: str,
        env: Envelope,
        *,
        stored: list[tuple[str, str]] | None = None,
        request_index: int | None = None,
    ) -> str:
        """Publish a prepared envelope to ``topic`` (run and causation filled from the scope).

        ``stored``, when given, receives the stream (the topic, or its partition) and the
        stored entry's id (requests use it to ask where their request stands when the
        reply is late). ``request_index`` numbers a handler's requests in the journal.
        """
        if not isinstance(topic, str):  # the 0.1 order, or a mistake
            topic, env = topic_first(topic, env, "publish_envelope")
        self._check_open()
        scope = current_scope()
        if scope is None:
            # An event of a known run sent from outside its handlers (the error reply to
            # a dead-lettered request) stays in that run; any other opens a run of its own.
            scope = (
                Scope(env.runid, env.causationid) if env.runid else await self._open_run(env, topic)
            )
        if scope.resume is not None and env.replyto is None:
            # Resumed after a crash: what the crashed attempt published is not sent again.
            sent = scope.resume.published(topic, env.type, env.data)
            if sent is not None:
                await self.note(RESUMED_PUBLISH_STEP, agent=scope.agent, published_id=sent)
                return sent
        stream, part = await self.partitions.route(topic, env.partitionkey, env.id)
        env.topic = topic
        if env.runid is None:
            env.runid = scope.run_id
        if env.causationid is None and scope.causation_id is not None:
            env.causationid = scope.causation_id
        with self.tracer.produce(env, topic):
            if self.signer is not None:
                self.signer.sign(env)  # last: the tracer may have added attributes
            payload = env.encode(self._settings.max_event_bytes)
            # A de-duplicated handler's events wait for its commit (requests cannot).
            outbox = scope.outbox if env.replyto is None else None
            records: list[JournalEntry] = []
            if self.writer.recording:
                records = self.writer.take_records() if outbox is None else []
                record = published(env, topic, part, request_index)
                records.append(JournalEntry(env.runid, record, raw_event=payload))
            if outbox is not None:
                outbox.append((stream, payload, records))
                return env.id
            entry_id = await self.transport.publish(stream, payload, records=records)
            if stored is not None:
                stored.append((stream, entry_id))
        self.metrics.published(topic)
        return env.id

    async def _open_run(self, env: Envelope, topic: str) -> Scope:
        """A run of its own for an event published outside any run or handler."""
        env.encode(self._settings.max_event_bytes)  # refuse an oversized one before
        run = self._new_run(f"publish {topic}", status="open")
        await run.begin()
        return Scope(run.run_id)

    @overload
    async def request(
        self,
        topic: str,
        message: Message,
        *,
        timeout: float | None = None,
        expect: type[M],
        key: str | None = None,
        source: str | None = None,
    ) -> M: ...

    @overload
    async def request(
        self,
        topic: str,
        message: Message,
        *,
        timeout: float | None = None,
        expect: None = None,
        key: str | None = None,
        source: str | None = None,
    ) -> Any: ...

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

        Returns the reply message (checked against ``expect`` when given, and typed as
        ``expect`` for a type checker). Raises :class:`RemoteError` when the handler
        failed, and :class:`RequestTimeout` (a ``TimeoutError``, saying where the request
        stands) when no reply comes: within ``timeout`` seconds when one is given; by
        default (``None``) when no agent takes the request within 30 s, or when it is no
        longer being worked on — a request held by a running handler, or by a crashed
        consumer until another claims it after the visibility timeout, is waited for
        (see docs/architecture.md, "Requests"). Cancelling the call abandons the reply.
        """
        return await self._requests.request(
            topic, message, timeout=timeout, expect=expect, key=key, source=source
        )
