"""Request/reply over topics: a private inbox per runtime and futures by correlation id."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .envelope import Envelope, decode_data, new_id
from .errors import (
    RemoteError,
    RequestTimeout,
    TransportClosed,
    TransportError,
    UsageError,
)
from .message import Message

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("agentbus.runtime")

ERROR_TYPE = "agentbus.Error"


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
        timeout: float,
        expect: type[Message] | None,
        key: str | None,
        source: str | None,
    ) -> Any:
        if timeout <= 0:
            raise UsageError(f"timeout must be positive, got {timeout!r}")
        self._ensure_reader()
        correlation = new_id()
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._waiters[correlation] = future
        try:
            await self.rt.publish(
                message,
                topic,
                key=key,
                source=source,
                replyto=self.inbox,
                correlationid=correlation,
            )
            try:
                reply = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise RequestTimeout(topic, timeout, correlation) from None
        finally:
            self._waiters.pop(correlation, None)
        if reply.type == ERROR_TYPE:
            data = reply.data or {}
            raise RemoteError(
                str(data.get("error_type", "Error")),
                str(data.get("message", "")),
                agent=str(data.get("agent", "")),
                event_id=str(data.get("event_id", "")),
            )
        answer = decode_data(reply, expect)
        return answer

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
                        self.rt.signer.verify(env)  # a forged reply must not answer
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
