"""An app for the human-in-the-loop tests: a refund above 100 asks a person.

Every *live* tool call appends a line to ``$ASK_LOG`` (if set), a side channel the tests
count: calls answered from the journal on resume write nothing.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from agentbus import Agent, App, Context, Message, QuestionTimeout, handle


class Refund(Message, type="askmp.Refund"):
    order: str
    amount: float
    timeout_s: float | None = 3 * 86_400.0


class Approval(Message, type="askmp.Approval"):
    order: str
    amount: float


class Decision(BaseModel):
    approve: bool
    note: str = ""


class Refunded(Message, type="askmp.Refunded"):
    order: str
    status: str
    note: str = ""


def _log(*words: object) -> None:
    path = os.environ.get("ASK_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(" ".join(str(w) for w in words) + "\n")


class Approver(Agent, name="approver"):
    @handle("askmp.refunds", output="askmp.results")
    async def refund(self, req: Refund, ctx: Context) -> Refunded:
        async def check() -> dict[str, Any]:
            _log("tool", req.order, ctx.runtime.consumer, time.time())
            return {"risk": "low"}

        await ctx.invoke("tool", "risk", {"order": req.order}, check)
        if req.amount <= 100:
            return Refunded(order=req.order, status="refunded")
        timeout = None if req.timeout_s is None else timedelta(seconds=req.timeout_s)
        try:
            decision = await ctx.ask_human(
                Approval(order=req.order, amount=req.amount), expect=Decision, timeout=timeout
            )
        except QuestionTimeout:
            return Refunded(order=req.order, status="expired")
        _log("answered", req.order, ctx.runtime.consumer, time.time())
        return Refunded(
            order=req.order,
            status="refunded" if decision.approve else "refused",
            note=decision.note,
        )


class Auditor(Agent, name="auditor"):
    """Also reads the refunds topic: must never see a woken event meant for ``approver``."""

    @handle("askmp.refunds")
    async def audit(self, req: Refund, ctx: Context) -> None:
        _log("audit", req.order, ctx.runtime.consumer, time.time())


app = App("ask-mp", [Approver, Auditor])
