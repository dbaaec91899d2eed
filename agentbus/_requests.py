"""Request/reply over topics: a private inbox per runtime and futures by correlation id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._retry import doubling, retry_io
from .context import current_scope
from .envelope import Envelope, decode_data, new_id
from .errors import (
    RemoteError,
    RequestTimeout,
    TransportClosed,
    TransportError,
    UsageError,
)
from .keys import validate_topic
from .message import Message
from .records import RESUMED_STEP
from .redact import redact_text

if TYPE_CHECKING:
    from ._bus import Bus
    from ._settings import Settings
    from .signing import Signer
    from .transports import Delivery, EntryState, Transport

log = logging.getLogger("agentbus.runtime")

#: The type of the envelope that tells a requester its request failed.
ERROR_TYPE = "agentbus.Error"
#: Delays between attempts at reading the inbox while the store is unreachable.
_READ_DELAYS = doubling(0.05, 5.0)

#: With no ``timeout``, how long a request may wait to be taken by an agent (seconds).
TAKE_TIMEOUT = 30.0
#: With no ``timeout``, how often a late reply's request is looked up again (seconds).
RECHECK_INTERVAL = 5.0


def recovery_window(visibility_timeout: float, claim_interval: float) -> float:
    """How long a request can sit idle on a crashed consumer before another claims it.

    An entry becomes claimable once idle for ``visibility_timeout``; live consumers look
    for such entries every ``claim_interval``; the rest is margin for the claim's read and
    a slow scan. A request idle for longer has nobody left to recover it.
    """
    return visibility_timeout + claim_interval + max(1.0, visibility_timeout / 2)


@dataclass(frozen=True, slots=True)
class _Standing:
    reason: str | None
    in_hand: bool = False  # being handled, or awaiting recovery from a crashed consumer
    replied: bool = False  # handled and acknowledged: the reply should be on its way


class Requests:
    """Owns the runtime's reply inbox (a topic only this runtime reads).

    ``bus`` publishes the requests; replies are read from ``transport`` and, with a
    ``signer``, verified.
    """

    def __init__(
        self,
        bus: Bus,
        transport: Transport,
        settings: Settings,
        signer: Signer | None,
        *,
        on_inbox: Callable[[], None] | None = None,
    ) -> None:
        self._bus = bus
        self._on_inbox = on_inbox
        self._transport = transport
        self.settings = settings
        self._signer = signer
        self.inbox = f"_inbox.{settings.consumer}"
        self._waiters: dict[str, asyncio.Future[Envelope]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._last = "0-0"

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="agentbus-inbox")
            if self._on_inbox is not None:
                self._on_inbox()  # announce it, so it is pruned if this process dies

    async def request(
        self,
        topic: str,
        message: Message,
        *,
        timeout: float | None,
        expect: type[Message] | None,
        key: str | None,
        source: str | None,
    ) -> Any:
        if timeout is not None and timeout <= 0:
            raise UsageError(f"timeout must be positive (or None), got {timeout!r}")
        validate_topic(topic)
        scope = current_scope()
        index: int | None = None
        if scope is not None and scope.event is not None:  # sent by a handler
            index = scope.requests
            scope.requests += 1
            if scope.resume is not None and isinstance(message, Message):  # sent already?
                data = message.model_dump(mode="json")
                sent = scope.resume.sent(topic, message.message_type, data)
                if sent is not None:
                    correlation = str((sent.get("event") or {}).get("correlationid", ""))
                    got = await scope.resume.reply(correlation, topic, timeout, TAKE_TIMEOUT)
                    await self._bus.note(
                        RESUMED_STEP,
                        agent=scope.agent,
                        request_id=sent.get("event_id"),
                        topic=topic,
                        reply_id=got.get("id"),
                    )
                    return self._answer(Envelope.from_dict(got), expect)
        self._ensure_reader()
        correlation = new_id()
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._waiters[correlation] = future
        try:
            env = Envelope.for_message(
                message,
                source=source or "client",
                partitionkey=key,
                replyto=self.inbox,
                correlationid=correlation,
            )
            stored: list[tuple[str, str]] = []
            await self._bus.publish_envelope(topic, env, stored=stored, request_index=index)
            reply = await self._wait(future, topic, stored, correlation, timeout)
        finally:
            self._waiters.pop(correlation, None)
        return self._answer(reply, expect)

    @staticmethod
    def _answer(reply: Envelope, expect: type[Message] | None) -> Any:
        """The reply's message (``expect`` checked), or the remote error it carries."""
        if reply.type == ERROR_TYPE:
            data = reply.data or {}
            raise RemoteError(
                str(data.get("error_type", "Error")),
                redact_text(str(data.get("message", ""))),  # whoever sent it
                agent=str(data.get("agent", "")),
                event_id=str(data.get("event_id", "")),
            )
        return decode_data(reply, expect)

    async def _wait(
        self,
        future: asyncio.Future[Envelope],
        topic: str,
        stored: list[tuple[str, str]],
        correlation: str,
        timeout: float | None,
    ) -> Envelope:
        """The reply; with no ``timeout``, waited for as long as the request is in hand."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        # asyncio.wait, not wait_for: waiting again must not cancel the future.
        done, _ = await asyncio.wait({future}, timeout=TAKE_TIMEOUT if timeout is None else timeout)
        replied_seen = False
        while not done:
            # Where it was stored: the topic's stream, or one of its partitions'.
            stream, entry_id = stored[0] if stored else (topic, None)
            standing = await self._standing(stream, entry_id)
            # A reply is published before the ack: once acked it may still be on its way.
            wait_on = standing.in_hand or (standing.replied and not replied_seen)
            if timeout is not None or not wait_on:
                waited = timeout if timeout is not None else round(loop.time() - started, 1)
                raise RequestTimeout(topic, waited, correlation, standing.reason)
            replied_seen = replied_seen or standing.replied
            done, _ = await asyncio.wait({future}, timeout=self._recheck)
        return future.result()

    @property
    def _recheck(self) -> float:
        return min(self.settings.claim_interval, RECHECK_INTERVAL)

    async def _standing(self, topic: str, entry_id: str | None) -> _Standing:
        """Where the request stands: being handled, awaiting recovery, queued, or lost."""
        if entry_id is None:
            return _Standing(None)  # nothing was published: the timeout is final
        try:
            states = await self._transport.entry_state(topic, entry_id)
        except TransportError as exc:
            return _Standing(f"could not check where the request stands: {exc}")
        if not states:
            return _Standing(
                f"no agent is subscribed to topic {topic!r} (it has no consumer group)"
            )
        pending = [s for s in states if s.consumer is not None]
        if pending:
            return self._pending_standing(pending)
        handled = [s.group for s in states if s.delivered]
        if handled:
            return _Standing(
                f"group(s) {handled!r} handled and acknowledged it, but no reply arrived",
                replied=True,
            )
        groups = [s.group for s in states]
        return _Standing(f"no agent has taken it yet: it is still queued for group(s) {groups!r}")

    def _pending_standing(self, pending: list[EntryState]) -> _Standing:
        """A request pending on a consumer: in hand, or lost with that consumer."""
        window = recovery_window(self.settings.visibility_timeout, self.settings.claim_interval)
        for s in pending:
            if s.idle_ms / 1000 <= window:
                # Held by a running handler (its lease keeps the idle time low), or by a
                # consumer that died and whose entry another consumer will claim once it
                # has been idle for the visibility timeout.
                return _Standing(
                    f"it is pending on consumer {s.consumer!r} of group {s.group!r} "
                    f"(delivery {s.deliveries}, idle {s.idle_ms / 1000:.1f}s)",
                    in_hand=True,
                )
        s = pending[0]
        return _Standing(
            f"it has been pending on consumer {s.consumer!r} of group {s.group!r} for "
            f"{s.idle_ms / 1000:.1f}s with no lease renewal, and no other consumer claimed "
            f"it (longer than the {window:g}s recovery takes with a visibility timeout of "
            f"{self.settings.visibility_timeout:g}s): is any consumer of {s.group!r} alive?"
        )

    async def _read(self) -> None:
        while True:
            try:
                entries = await retry_io(
                    self._read_more, what="reading the reply inbox", delays=_READ_DELAYS
                )
            except TransportClosed:
                return
            for d in entries:
                self._last = d.entry_id
                self._deliver(d)

    async def _read_more(self) -> list[Delivery]:
        return await self._transport.read_tail(
            self.inbox, self._last, count=100, block_ms=self.settings.block_ms
        )

    def _deliver(self, d: Delivery) -> None:
        """Hand a reply to whoever waits for it (a malformed or forged one to no one)."""
        try:
            env = Envelope.decode(d.payload or b"")
            if self._signer is not None:
                self._signer.verify(env, topic=self.inbox)  # nor a forged or copied one
        except Exception as exc:  # DecodeError, or whatever a hostile entry raised
            log.warning("ignored a malformed reply %s: %s", d.entry_id, exc)
            return
        waiter = self._waiters.get(env.correlationid or "")
        if waiter is not None and not waiter.done():
            waiter.set_result(env)

    @property
    def reading(self) -> tuple[str, str] | None:
        """(inbox, last entry id read) while the inbox is read, else ``None``."""
        return None if self._reader is None else (self.inbox, self._last)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
            self._reader = None
            try:
                await self._transport.delete_topic(self.inbox)
            except Exception as exc:
                log.debug("could not delete the inbox %s: %s", self.inbox, exc)
