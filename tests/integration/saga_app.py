"""A trip saga's coordinator, for the saga crash test: ``agentbus worker`` hosts it (the
test kills that process); the test's own runtime hosts the booking agents."""

from __future__ import annotations

from agentbus import App
from agentbus.patterns.saga import Saga, Step

TOPIC = "sagacrash.trips"
KINDS = ("flight", "hotel", "car")


def planner() -> Saga:
    steps = [Step(kind, f"sagacrash.{kind}s") for kind in KINDS]
    return Saga(
        name="trip-planner",
        topic=TOPIC,
        steps=steps,
        step_timeout=60,
        compensation_backoff=(0.05, 0.2),
    )


app = App("saga-crash", [planner])
