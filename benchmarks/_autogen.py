"""The autogen-core agent the in-process baselines use (imported only when needed).

No ``from __future__ import annotations`` here: autogen-core's ``@message_handler``
resolves the handler's annotations at class creation, in this module's namespace.
"""

from autogen_core import MessageContext, RoutedAgent, message_handler

from ._harness import Ping


class AutogenSink(RoutedAgent):
    """Counts the pings it handles."""

    def __init__(self) -> None:
        super().__init__("counts pings")
        self.count = 0

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> None:
        self.count += 1
