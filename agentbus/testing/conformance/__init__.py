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
:class:`BrokerChecks`, :class:`JournalChecks`, :class:`AdminChecks` (a transport's
``store`` and ``admin`` are reached through it, so a check class still receives a
whole transport). :class:`AdminChecks` includes :class:`PresenceChecks`, the checks of
the admin's presence methods. Needs pytest and pytest-asyncio. Checks on idle time wait in real
time (a few hundred milliseconds) unless :meth:`~ConformanceBase.age` is overridden
to move the transport's clock instead.
"""

from __future__ import annotations

from ._base import ConformanceBase
from .admin import AdminChecks
from .broker import BrokerChecks
from .journal import JournalChecks
from .presence import PresenceChecks

__all__ = [
    "AdminChecks",
    "BrokerChecks",
    "ConformanceBase",
    "JournalChecks",
    "PresenceChecks",
    "TransportConformance",
]


class TransportConformance(BrokerChecks, JournalChecks, AdminChecks):
    """Every check of the transport contract (broker, journal store, administration
    with presence)."""
