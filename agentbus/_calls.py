"""The seam for external calls (model and tool) and a coordinator's notes.

Every call made through :meth:`Context.invoke` is numbered within the event being
handled, traced, and recorded with its request, response (or error) and duration; on
replay a substitute answers it from the recording instead, and on a redelivery after a
crash the crashed attempt's record of it does (:mod:`agentbus._resume`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._bus import CallKind
from .context import Scope, current_scope
from .journal import record
from .redact import redact, redact_text
from .transports import JournalEntry

if TYPE_CHECKING:
    from ._hooks import Tracer
    from ._writer import Writer
    from .budget import Budgets

__all__ = ["Calls", "Substitute"]

#: Answers a call from a recording: (kind, name, request, scope, call index) ->
#: the response, or ``None`` to let the live call happen.
Substitute = Callable[[CallKind, str, dict[str, Any], Scope, int], Awaitable[dict[str, Any] | None]]


class Calls:
    """Records (and on replay substitutes) external calls and notes."""

    def __init__(self, writer: Writer, tracer: Tracer) -> None:
        self._writer = writer
        self._tracer = tracer
        #: Replaces live model/tool calls (replay installs one); ``None`` calls live.
        self.substitute: Substitute | None = None
        #: Reserves live calls against their runs' budgets (set by the runtime).
        self.budgets: Budgets | None = None

    def note(self, step: str, agent: str | None, details: dict[str, Any]) -> None:
        """Record a ``step`` note in the current run (and a tracing span)."""
        scope = current_scope()
        self._tracer.step(step, agent or (scope.agent if scope else None), details)
        if scope is None or not self._writer.recording:
            return
        entry = record(
            "step",
            step=step,
            agent=agent or scope.agent,
            event_id=scope.causation_id,
            **redact(details),
        )
        self._writer.record(JournalEntry(scope.run_id, entry))

    async def invoke(
        self,
        kind: CallKind,
        name: str,
        request: dict[str, Any],
        call: Callable[[], Awaitable[dict[str, Any]]],
        agent: str | None,
    ) -> dict[str, Any]:
        """Make (or substitute) the call; record it whatever happens."""
        scope = current_scope()
        index = 0
        if scope is not None:
            index = scope.calls
            scope.calls += 1
        # What is recorded, traced and compared on replay has its secrets masked (API
        # keys, Authorization headers, URL passwords); only the live call sees them.
        shown: dict[str, Any] = redact(request)
        started = time.perf_counter()
        outcome: dict[str, Any] = {"substituted": False}
        try:
            response = await self._answer(kind, name, shown, call, scope, index, agent, outcome)
            outcome["response"] = redact(response)  # a tool may return a URL with a key
            return response
        except BaseException as exc:
            outcome["error"] = redact_text(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if scope is not None and self._writer.recording:
                fields = {
                    "name": name,
                    "agent": agent or scope.agent,
                    "event_id": scope.causation_id,
                    "call_index": index,
                    "request": shown,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    **outcome,
                }
                self._writer.record(JournalEntry(scope.run_id, record(f"{kind}_call", **fields)))

    async def _answer(
        self,
        kind: CallKind,
        name: str,
        shown: dict[str, Any],
        call: Callable[[], Awaitable[dict[str, Any]]],
        scope: Scope | None,
        index: int,
        agent: str | None,
        outcome: dict[str, Any],
    ) -> dict[str, Any]:
        if scope is not None and scope.resume is not None:
            # Redelivered after a crash: what the crashed attempt already got is not
            # asked again (a different call here raises ResumeMismatch).
            response = scope.resume.answer(kind, name, shown, index)
            if response is not None:
                outcome["substituted"] = True
                outcome["resumed"] = True
                return response
        if self.substitute is not None and scope is not None:
            response = await self.substitute(kind, name, shown, scope, index)
            if response is not None:
                outcome["substituted"] = True
                return response
        # Only a live call is charged: one answered from a recording or a crashed
        # attempt above was paid for when it was made.
        ticket = None
        if self.budgets is not None and scope is not None:
            ticket = await self.budgets.before(kind, name, shown, scope)
        who = agent or (scope.agent if scope else None)
        answer: dict[str, Any] | None = None
        try:
            with self._tracer.call(kind, name, who, shown) as span:
                answer = await call()
                span.response(answer)
        finally:
            if ticket is not None and self.budgets is not None:
                await self.budgets.after(ticket, answer)  # a failed call: estimate back
        return answer
