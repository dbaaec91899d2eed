"""What the delivery path (read loop, dispatch, outcomes) uses, handed over as one.

The runtime builds one :class:`Services` and gives it to each subscription: the bus
handlers publish through, the transport, the writer of acks and records, metrics, the
tracer, the frozen settings, the key names and the decoder. Nothing on the delivery
path imports the runtime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._hooks import Metrics, NullTracer, Tracer
from .transports import JournalEntry

if TYPE_CHECKING:
    from ._bus import Bus
    from ._cancel import Cancels
    from ._decoding import Decoder
    from ._resume import Resumer
    from ._settings import Settings
    from ._writer import Writer
    from .envelope import Envelope
    from .keys import Keys
    from .partitions import PartitionTable
    from .transports import Transport

__all__ = ["ORPHAN_RUN", "Services", "Stamp"]

#: The run of records about an event that names none (or could not be decoded).
ORPHAN_RUN = "orphans"


@dataclass(frozen=True, slots=True)
class Services:
    """The runtime's collaborators a subscription uses (none of them is the runtime)."""

    bus: Bus
    transport: Transport
    writer: Writer
    metrics: Metrics
    tracer: Tracer
    settings: Settings
    keys: Keys
    decoder: Decoder
    #: Which topics are partitioned, and into how many streams.
    partitions: PartitionTable
    #: Reads what a crashed attempt recorded, for a redelivered delivery.
    resumer: Resumer
    #: The runs this process knows are cancelled (their deliveries are not handled).
    cancels: Cancels

    @property
    def traced(self) -> bool:
        """Whether spans are wanted (the default tracer records nothing)."""
        return not isinstance(self.tracer, NullTracer)


@dataclass(frozen=True, slots=True)
class Stamp:
    """Who received a delivery, written on each of its records.

    The agent and consumer, and for a broadcast subscription its per-instance group,
    so a trace shows every replica's deliveries apart (a shared group's are one
    delivery of the agent).
    """

    agent: str
    replica: dict[str, str]

    def delivered(self, env: Envelope, attempt: int) -> JournalEntry:
        """The ``delivered`` record (:meth:`record` spelled out: one per delivery)."""
        return JournalEntry(
            env.runid or ORPHAN_RUN,
            {
                "kind": "delivered",
                "time": time.time(),
                "event_id": env.id,
                "type": env.type,
                "topic": env.topic,
                "agent": self.agent,
                **self.replica,
                "attempt": attempt,
            },
        )

    def handled(self, env: Envelope, attempt: int, duration_ms: float) -> JournalEntry:
        """The ``handled`` record (:meth:`record` spelled out: one per delivery)."""
        return JournalEntry(
            env.runid or ORPHAN_RUN,
            {
                "kind": "handled",
                "time": time.time(),
                "event_id": env.id,
                "type": env.type,
                "topic": env.topic,
                "agent": self.agent,
                **self.replica,
                "attempt": attempt,
                "duration_ms": duration_ms,
            },
        )

    def record(self, env: Envelope, kind: str, **fields: Any) -> JournalEntry:
        """A delivery record of ``kind`` about ``env``, filed under its run."""
        return JournalEntry(
            env.runid or ORPHAN_RUN,
            {
                "kind": kind,
                "time": time.time(),
                "event_id": env.id,
                "type": env.type,
                "topic": env.topic,
                "agent": self.agent,
                **self.replica,
                **fields,
            },
        )
