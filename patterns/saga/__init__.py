"""Sagas: a distributed transaction as steps with compensations.

::

    trip = Saga(
        name="trip-planner", topic="trip.bookings",
        steps=[Step("flight", "trip.flights"), Step("hotel", "trip.hotels"), Step("car", "trip.cars")],
        step_timeout=10,
    )
    flights = SagaParticipant(name="flights", topic="trip.flights", action=book, compensate=cancel)
    outcome = await run.request(trip.topic, SagaJob(saga_id="t-1", data={...}), expect=SagaOutcome)

The coordinator (:class:`Saga`, *orchestration*) sends each step as a request to its
participant; when one fails or times out it compensates the steps done, newest first,
retrying each compensation, and replies with a :class:`SagaOutcome` (``completed``,
``compensated`` or ``compensation_failed``). Every move is a ``step`` record
(``saga.step``, ``saga.step_done``, ``saga.step_failed``, ``saga.compensating``,
``saga.step_compensated``, ``saga.compensation_error``, ``saga.compensated``,
``saga.compensation_failed``), so ``agentbus trace`` shows the saga forward and back. A
crash of the coordinator's process is survived by the runtime's resume (no step done
twice, no compensation skipped). *Choreography* needs no coordinator: participants react
to each other's events (``examples/trip_booking.py`` shows both; docs/patterns.md).
"""

from __future__ import annotations

from ._coordinator import Saga, Step
from ._messages import Compensate, Compensated, SagaJob, SagaOutcome, StepDone, StepRequest
from ._participant import ActionFn, CompensateFn, SagaParticipant, StepRefused

__all__ = [
    "ActionFn",
    "Compensate",
    "CompensateFn",
    "Compensated",
    "Saga",
    "SagaJob",
    "SagaOutcome",
    "SagaParticipant",
    "Step",
    "StepDone",
    "StepRefused",
    "StepRequest",
]
