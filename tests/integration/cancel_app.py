"""An app for the cancel test: every worker sleeps on every job (broadcast), one at a time.

Each handler writes a line to ``$CANCEL_LOG`` when it starts and when it stops (how, and
the wall-clock time), a side channel the test reads besides the journal.
"""

from __future__ import annotations

import asyncio
import os
import time

from agentbus import Agent, App, Context, Message, handle


class Nap(Message, type="cxmp.Nap"):
    n: int


def _log(*words: object) -> None:
    with open(os.environ["CANCEL_LOG"], "a", encoding="utf-8") as f:
        f.write(" ".join(str(w) for w in words) + "\n")


class Napper(Agent, name="napper"):
    concurrency = 1

    @handle("cxmp.naps", mode="broadcast")
    async def nap(self, job: Nap, ctx: Context) -> None:
        who = ctx.runtime.consumer
        _log("started", ctx.run_id, job.n, who, time.time())
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            _log("cancelled", ctx.run_id, job.n, who, time.time())
            raise
        _log("completed", ctx.run_id, job.n, who, time.time())


app = App("cancel-mp", [Napper])
