"""The shop as it was: a refund carries its amount in dollars (``shop.Refund`` version 1)."""

from __future__ import annotations

from agentbus import Agent, App, Context, Message, Run, handle


class Refund(Message, type="evo.Refund"):
    order: str
    amount: float


class Refunded(Message, type="evo.Refunded"):
    order: str
    cents: int


class Cashier(Agent, name="evo-cashier"):
    @handle("evo.refunds")
    async def refund(self, refund: Refund, ctx: Context) -> Refunded:
        return Refunded(order=refund.order, cents=round(refund.amount * 100))


app = App("evo-shop", [Cashier])


@app.main
async def main(run: Run) -> str:
    done: Refunded = await run.request("evo.refunds", Refund(order="A-1", amount=12.5), timeout=30)
    return f"{done.order}: {done.cents} cents"
