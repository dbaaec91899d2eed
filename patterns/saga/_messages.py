"""The saga's messages: the job, each step's request and reply, compensations, the outcome."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from agentbus import Message

__all__ = ["Compensate", "Compensated", "SagaJob", "SagaOutcome", "StepDone", "StepRequest"]


class SagaJob(Message, type="patterns.SagaJob"):
    """Start a saga: its id (the idempotency key of every step) and its input."""

    saga_id: str
    """The saga's id; steps and compensations are keyed by it and the step's name."""
    data: dict[str, Any] = Field(default_factory=dict)
    """The input, handed to the first step (each next step also gets the results so far)."""


class StepRequest(Message, type="patterns.SagaStep"):
    """Do step ``step`` of saga ``saga_id`` (sent to the step's topic)."""

    saga_id: str
    """The saga."""
    step: str
    """The step's name."""
    data: dict[str, Any] = Field(default_factory=dict)
    """The saga's input and the results of the steps done so far, by step name."""

    @property
    def key(self) -> str:
        """``saga_id:step``: the idempotency key to give external systems."""
        return f"{self.saga_id}:{self.step}"


class StepDone(Message, type="patterns.SagaStepDone"):
    """A step's reply: what it did (kept for its compensation and the next steps)."""

    saga_id: str
    """The saga."""
    step: str
    """The step's name."""
    result: dict[str, Any] = Field(default_factory=dict)
    """What the step did (a booking reference...), handed to its compensation."""
    refused: str | None = None
    """Why the participant refused the step (:class:`StepRefused`); ``None`` when done."""


class Compensate(Message, type="patterns.SagaCompensate"):
    """Undo step ``step`` of saga ``saga_id``; ``result`` is what the step replied, or
    ``None`` when it timed out (it may or may not have happened: undo if it did)."""

    saga_id: str
    """The saga."""
    step: str
    """The step to undo."""
    result: dict[str, Any] | None = None
    """The step's result; ``None`` when the step did not answer in time."""

    @property
    def key(self) -> str:
        """``saga_id:step``: the same idempotency key as the step's."""
        return f"{self.saga_id}:{self.step}"


class Compensated(Message, type="patterns.SagaCompensated"):
    """A compensation's reply."""

    saga_id: str
    """The saga."""
    step: str
    """The step undone."""


class SagaOutcome(Message, type="patterns.SagaOutcome"):
    """How a saga ended.

    ``completed``: every step done. ``compensated``: a step failed and every step done
    before it (and the failed one, when it timed out) was undone, newest first.
    ``compensation_failed``: a compensation kept failing; ``stuck`` names it and a
    person must finish the undo (the steps in ``compensated`` were undone).
    """

    saga_id: str
    """The saga."""
    status: Literal["completed", "compensated", "compensation_failed"]
    """How it ended."""
    results: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Each done step's result, by step name."""
    failed_step: str | None = None
    """The step that failed (``None`` when completed)."""
    error: str | None = None
    """Why it failed."""
    compensated: list[str] = Field(default_factory=list)
    """The steps undone, in the order they were undone."""
    stuck: str | None = None
    """The compensation that kept failing (``compensation_failed`` only)."""
