"""The shop today: a refund carries cents (``evo.Refund`` version 2), with the upcaster that
reads version 1 refunds. ``EVO_NO_UPCASTER=1`` leaves the upcaster out (the mistake
check-compat catches)."""

from __future__ import annotations

import os
from typing import Any

from agentbus import Agent, App, Context, Message, Run, handle, upcaster


class Refund(Message, type="evo.Refund", version=2):
    order: str
    amount_cents: int
    reason: str = ""  # added with version 2: optional, so no upcaster needs it


class Refunded(Message, type="evo.Refunded"):
    order: str
    cents: int


if not os.environ.get("EVO_NO_UPCASTER"):

    @upcaster("evo.Refund", from_version=1)
    def dollars_to_cents(data: dict[str, Any]) -> dict[str, Any]:
        return {"order": data["order"], "amount_cents": round(data["amount"] * 100)}


class Cashier(Agent, name="evo-cashier"):
    @handle("evo.refunds")
    async def refund(self, refund: Refund, ctx: Context) -> Refunded:
        return Refunded(order=refund.order, cents=refund.amount_cents)


app = App("evo-shop", [Cashier])


@app.main
async def main(run: Run) -> str:
    done: Refunded = await run.request(
        "evo.refunds", Refund(order="A-1", amount_cents=1250), timeout=30
    )
    return f"{done.order}: {done.cents} cents"
