"""The runtime's tuning, frozen: what the read loops, handlers and requests obey.

:class:`~agentbus.Runtime` builds one :class:`Settings` from its keyword arguments and
hands it to each collaborator (subscriptions, requests, runs), so none of them needs
the runtime itself. Being frozen, it can be shared without anyone changing it under
another's feet; replace it with :func:`dataclasses.replace` before ``start()``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._retry import jittered
from .envelope import DEFAULT_MAX_EVENT_BYTES
from .errors import UsageError

__all__ = ["Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    """How a runtime reads, retries and records (see :class:`~agentbus.Runtime`).

    ``recording`` is ``Runtime(journal=)``: whether runs are recorded at all.
    Raises :class:`UsageError` for a value out of range.
    """

    consumer: str
    concurrency: int = 64
    batch_size: int = 64
    block_ms: int = 1000
    visibility_timeout: float = 30.0
    max_attempts: int = 3
    retry_backoff: tuple[float, float] = (0.1, 5.0)
    grace_period: float = 10.0
    handler_timeout: float | None = 600.0
    recording: bool = True
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    dedupe_ttl: int = 86_400
    #: How often idle entries of dead consumers are looked for (default: half the
    #: visibility timeout).
    claim_interval: float = 0.0
    #: Seconds a partition's lease and a member's heartbeat last (renewed every third):
    #: how soon the partitions of a dead consumer are taken over.
    partition_lease: float = 10.0

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.batch_size < 1 or self.max_attempts < 1:
            raise UsageError(
                "concurrency, batch_size and max_attempts must be at least 1, got "
                f"{self.concurrency!r}, {self.batch_size!r}, {self.max_attempts!r}"
            )
        if self.visibility_timeout <= 0:
            raise UsageError(
                f"visibility_timeout must be positive, got {self.visibility_timeout!r}"
            )
        if self.handler_timeout is not None and not self.handler_timeout > 0:
            raise UsageError(
                f"handler_timeout must be positive seconds or None, got {self.handler_timeout!r}"
            )
        if not self.partition_lease > 0:
            raise UsageError(f"partition_lease must be positive, got {self.partition_lease!r}")
        if self.claim_interval <= 0:
            object.__setattr__(self, "claim_interval", max(self.visibility_timeout / 2, 0.05))

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (exponential, full jitter on the top half)."""
        return jittered(*self.retry_backoff)(attempt)

    def outage_delay(self, outages: int) -> float:
        """Delay before trying again after the ``outages``-th store outage in a row."""
        return self.backoff(min(outages, 30))
