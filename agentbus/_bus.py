"""What a handler's context, a run and the delivery path need of the runtime.

:class:`Bus` is the narrow face of :class:`~agentbus.Runtime` its collaborators
receive instead of the runtime itself: publish, request, note, invoke, and read the
journal. Anything that implements it (a test double, a wrapper) can stand in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

from pydantic import BaseModel

from .envelope import Envelope
from .message import Message

if TYPE_CHECKING:
    from .journal import Journal
    from .transports import Question

__all__ = ["Bus", "CallKind"]

M = TypeVar("M", bound=Message)
T = TypeVar("T", bound=BaseModel)
CallKind = Literal["model", "tool"]


class Bus(Protocol):
    """Publish, request and record on behalf of agents and runs (the runtime is one)."""

    #: This process's consumer name (unique per runtime).
    consumer: str

    @property
    def journal(self) -> Journal:
        """Read access to the recorded runs."""
        ...

    async def publish(
        self,
        topic: str,
        message: Message,
        *,
        key: str | None = None,
        subject: str | None = None,
        source: str | None = None,
        **attributes: Any,
    ) -> str: ...

    async def publish_envelope(
        self,
        topic: str,
        env: Envelope,
        *,
        stored: list[tuple[str, str]] | None = None,
        request_index: int | None = None,
    ) -> str: ...

    async def cancel_run(self, run_id: str, *, by: str = ...) -> bool: ...

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

    async def note(self, step: str, *, agent: str | None = None, **details: Any) -> None: ...

    async def invoke(
        self,
        kind: CallKind,
        name: str,
        request: dict[str, Any],
        call: Callable[[], Awaitable[dict[str, Any]]],
        *,
        agent: str | None = None,
    ) -> dict[str, Any]: ...

    async def ask_human(
        self,
        question: BaseModel,
        *,
        expect: type[T],
        timeout: timedelta | float | None = None,
        agent: str | None = None,
        summary: str | None = None,
    ) -> T: ...

    async def answer(
        self, run_id: str, question_id: str, answer: Any, *, by: str = ...
    ) -> Question: ...

    async def pending(self, run_id: str | None = None) -> list[Question]: ...
