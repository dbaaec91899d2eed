"""An app with a partitioned topic, hosted by `agentbus worker` in the partition tests.

Each handled order is appended to the file ``$PARTITION_LOG`` as ``key seq consumer``
(one ``write`` per line, ``O_APPEND``: lines from several processes do not mix).
"""

from __future__ import annotations

import asyncio
import os
import random

from agentbus import Agent, App, Context, Message, handle

TOPIC = "pt.orders"


class Order(Message, type="pt.Order"):
    key: str
    seq: int


class Ledger(Agent, name="ledger"):
    @handle(TOPIC)
    async def book(self, order: Order, ctx: Context) -> None:
        await asyncio.sleep(random.uniform(0.01, 0.04))
        line = f"{order.key} {order.seq} {ctx.runtime.consumer}\n".encode()
        fd = os.open(os.environ["PARTITION_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


app = App("pt", [Ledger], partitions={TOPIC: 8})
