"""A trip booked as a saga: flight, hotel, car; no car is free, so the hotel and the flight are cancelled.

The ``trip-planner`` saga (orchestration) asks each booking agent in turn and, when the car
rental fails, sends the compensations newest first: cancel the hotel, then the flight. The
outcome lists what was booked and undone; ``agentbus trace`` shows the saga forward and back.
The choreographed version, with no coordinator, is in docs/patterns.md.

Plain Python, no model needed:

    agentbus run examples/trip_booking.py
"""

from __future__ import annotations

from typing import Any

from agentbus import App, Context, Run
from agentbus.patterns.saga import (
    Compensate,
    Saga,
    SagaJob,
    SagaOutcome,
    SagaParticipant,
    Step,
    StepRefused,
    StepRequest,
)

TRIP = SagaJob(saga_id="trip-0042", data={"traveller": "Ada", "city": "Lisbon", "nights": 3})


class Desk:
    """A booking system: references by saga and step, so a repeated call books once."""

    def __init__(self, kind: str, *, available: bool = True) -> None:
        self.kind = kind
        self.available = available
        self.bookings: dict[str, str] = {}

    def book(self, request: StepRequest, ctx: Context) -> dict[str, Any]:
        if not self.available:
            raise StepRefused(f"no {self.kind} available in {request.data['input']['city']}")
        ref = self.bookings.setdefault(
            request.key, f"{self.kind[:2].upper()}-{len(self.bookings) + 1}"
        )
        return {"ref": ref}

    def cancel(self, request: Compensate, ctx: Context) -> None:
        self.bookings.pop(request.key, None)  # idempotent: cancelling twice is fine


def desk_agent(kind: str, *, available: bool = True) -> SagaParticipant:
    """The agent of one booking system (its topic ``trip.<kind>s``)."""
    desk = Desk(kind, available=available)
    return SagaParticipant(
        name=f"{kind}s", topic=f"trip.{kind}s", action=desk.book, compensate=desk.cancel
    )


def planner() -> Saga:
    steps = [Step(kind, f"trip.{kind}s") for kind in ("flight", "hotel", "car")]
    return Saga(name="trip-planner", topic="trip.bookings", steps=steps, step_timeout=30)


app = App(
    "trip-booking",
    [
        planner,
        lambda: desk_agent("flight"),
        lambda: desk_agent("hotel"),
        lambda: desk_agent("car", available=False),  # none free: the saga compensates
    ],
)


@app.main
async def main(run: Run) -> str:
    outcome = await run.request("trip.bookings", TRIP, expect=SagaOutcome, timeout=120)
    booked = ", ".join(f"{step} {r['ref']}" for step, r in outcome.results.items())
    undone = ", ".join(outcome.compensated) or "nothing"
    return (
        f"saga {outcome.saga_id}: {outcome.status}; booked {booked}; "
        f"{outcome.failed_step} failed ({outcome.error}); cancelled {undone}"
    )
