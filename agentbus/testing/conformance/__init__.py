"""The transport conformance kit: check that a transport keeps the contract.

Every check the memory and Redis transports pass, packaged for any transport (trio's
"conformance checkers", as pytest classes). Subclass :class:`TransportConformance` in a
test module, give it :meth:`~ConformanceBase.make_transport`, and pytest runs every
check against it::

    from agentbus.testing.conformance import TransportConformance

    class TestMyTransport(TransportConformance):
        async def make_transport(self):
            return MyTransport(...)

A transport that implements one role alone can use that role's checks:
:class:`BrokerChecks` (and :class:`PartitionChecks`), :class:`JournalChecks` (with
:class:`ArchivingChecks`), :class:`AdminChecks` (a transport's
``store`` and ``admin`` are reached through it, so a check class still receives a
whole transport). :class:`AdminChecks` includes :class:`PresenceChecks`, the checks of
the admin's presence methods. Needs pytest and pytest-asyncio. Checks on idle time wait in real
time (a few hundred milliseconds) unless :meth:`~ConformanceBase.age` is overridden
to move the transport's clock instead.
"""

from __future__ import annotations

from ._base import ConformanceBase
from .admin import AdminChecks
from .archiving import ArchivingChecks
from .broker import BrokerChecks
from .journal import JournalChecks
from .partitions import PartitionChecks
from .presence import PresenceChecks
from .spread import SpreadChecks

__all__ = [
    "AdminChecks",
    "ArchivingChecks",
    "BrokerChecks",
    "ConformanceBase",
    "JournalChecks",
    "PartitionChecks",
    "PresenceChecks",
    "SpreadChecks",
    "TransportConformance",
]


class TransportConformance(BrokerChecks, PartitionChecks, JournalChecks, AdminChecks):
    """Every check of the transport contract (broker with its partition primitives,
    journal store, administration with presence)."""
