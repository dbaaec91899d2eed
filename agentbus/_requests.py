"""Request/reply over topics: a private inbox per runtime and futures by correlation id."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from .redact import redact_text

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("agentbus.runtime")

ERROR_TYPE = "agentbus.Error"

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
    """Owns the runtime's reply inbox (a topic only this runtime reads)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.inbox = f"_inbox.{runtime.consumer}"
        self._waiters: dict[str, asyncio.Future[Envelope]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._last = "0-0"

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="agentbus-inbox")

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
            entry_ids: list[str] = []
            await self.rt.publish_envelope(env, topic, entry_ids=entry_ids)
            reply = await self._wait(future, topic, entry_ids, correlation, timeout)
        finally:
            self._waiters.pop(correlation, None)
        if reply.type == ERROR_TYPE:
            data = reply.data or {}
            raise RemoteError(
                str(data.get("error_type", "Error")),
                redact_text(str(data.get("message", ""))),  # whoever sent it
                agent=str(data.get("agent", "")),
                event_id=str(data.get("event_id", "")),
            )
        answer = decode_data(reply, expect)
        return answer

    async def _wait(
        self,
        future: asyncio.Future[Envelope],
        topic: str,
        entry_ids: list[str],
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
            standing = await self._standing(topic, entry_ids[0] if entry_ids else None)
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
        return min(self.rt.claim_interval, RECHECK_INTERVAL)

    async def _standing(self, topic: str, entry_id: str | None) -> _Standing:
        """Where the request stands: being handled, awaiting recovery, queued, or lost."""
        if entry_id is None:
            return _Standing(None)  # nothing was published: the timeout is final
        try:
            states = await self.rt.transport.entry_state(topic, entry_id)
        except TransportError as exc:
            return _Standing(f"could not check where the request stands: {exc}")
        if not states:
            return _Standing(
                f"no agent is subscribed to topic {topic!r} (it has no consumer group)"
            )
        window = recovery_window(self.rt.visibility_timeout, self.rt.claim_interval)
        pending = [s for s in states if s.consumer is not None]
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
        if pending:
            s = pending[0]
            return _Standing(
                f"it has been pending on consumer {s.consumer!r} of group {s.group!r} for "
                f"{s.idle_ms / 1000:.1f}s with no lease renewal, and no other consumer claimed "
                f"it (longer than the {window:g}s recovery takes with a visibility timeout of "
                f"{self.rt.visibility_timeout:g}s): is any consumer of {s.group!r} alive?"
            )
        handled = [s.group for s in states if s.delivered]
        if handled:
            return _Standing(
                f"group(s) {handled!r} handled and acknowledged it, but no reply arrived",
                replied=True,
            )
        groups = [s.group for s in states]
        return _Standing(f"no agent has taken it yet: it is still queued for group(s) {groups!r}")

    async def _read(self) -> None:
        backoff = 0.05
        while True:
            try:
                entries = await self.rt.transport.read_tail(
                    self.inbox, self._last, count=100, block_ms=self.rt.block_ms
                )
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except TransportClosed:
                return
            except TransportError as exc:
                log.warning("reading the reply inbox failed: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for d in entries:
                self._last = d.entry_id
                try:
                    env = Envelope.decode(d.payload or b"")
                    if self.rt.signer is not None:
                        self.rt.signer.verify(env, topic=self.inbox)  # nor a forged or copied one
                except Exception as exc:  # DecodeError, or whatever a hostile entry raised
                    log.warning("ignored a malformed reply %s: %s", d.entry_id, exc)
                    continue
                waiter = self._waiters.get(env.correlationid or "")
                if waiter is not None and not waiter.done():
                    waiter.set_result(env)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
            self._reader = None
            try:
                await self.rt.transport.delete_topic(self.inbox)
            except Exception as exc:
                log.debug("could not delete the inbox %s: %s", self.inbox, exc)
