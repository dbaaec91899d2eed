"""A support desk: a triage agent routes tickets to specialist agents, who resolve them.

Plain-Python agents, no model needed. Run it embedded (no Redis):

    agentbus run examples/support_desk.py

or across processes on Redis (start workers first, then drive the run):

    agentbus worker examples.support_desk:app --url redis://127.0.0.1:6379/0   # x2
    agentbus run examples/support_desk.py --no-agents --url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import asyncio

from agentbus import Agent, App, Context, Message, Run, handle


class Ticket(Message, type="desk.Ticket"):
    id: str
    text: str


class Resolution(Message, type="desk.Resolution"):
    ticket_id: str
    team: str
    answer: str
    steps: list[str]


class DeskReport(Message, type="desk.Report"):
    resolutions: list[Resolution]
    by_team: dict[str, int]


ROUTES = {
    "billing": ("invoice", "refund", "charge", "payment", "card"),
    "tech": ("error", "crash", "login", "password", "slow", "bug"),
}


class Triage(Agent, name="triage"):
    """Classifies a ticket by keywords and asks the right team to resolve it."""

    @handle("desk.tickets")
    async def route(self, ticket: Ticket, ctx: Context) -> Resolution:
        words = ticket.text.lower()
        scores = {team: sum(w in words for w in keys) for team, keys in ROUTES.items()}
        team = max(scores, key=lambda t: scores[t]) if any(scores.values()) else "general"
        reply: Resolution = await ctx.request(f"desk.{team}", ticket, expect=Resolution, timeout=10)
        return reply


class Billing(Agent, name="billing"):
    @handle("desk.billing")
    async def resolve(self, ticket: Ticket, ctx: Context) -> Resolution:
        refund = "refund" in ticket.text.lower()
        steps = ["look up the invoice", "check the charge against the plan"]
        steps.append("issue a refund to the card on file" if refund else "explain the charge")
        return Resolution(
            ticket_id=ticket.id,
            team="billing",
            steps=steps,
            answer="Refund issued; it shows up in 3-5 days."
            if refund
            else "The charge matches your plan.",
        )


class Tech(Agent, name="tech"):
    @handle("desk.tech")
    async def resolve(self, ticket: Ticket, ctx: Context) -> Resolution:
        login = "login" in ticket.text.lower() or "password" in ticket.text.lower()
        steps = ["reproduce the problem", "check the status page"]
        steps.append("send a password reset link" if login else "collect logs and open a bug")
        return Resolution(
            ticket_id=ticket.id,
            team="tech",
            steps=steps,
            answer="Password reset link sent." if login else "Bug filed; we will follow up.",
        )


class General(Agent, name="general"):
    @handle("desk.general")
    async def resolve(self, ticket: Ticket, ctx: Context) -> Resolution:
        return Resolution(
            ticket_id=ticket.id,
            team="general",
            steps=["answer from the FAQ"],
            answer="Thanks for reaching out; see the FAQ for details.",
        )


app = App("support-desk", [Triage, Billing, Tech, General])

TICKETS = [
    Ticket(id="T-1", text="I was charged twice on my card, please refund one payment"),
    Ticket(id="T-2", text="Login fails with an error after the password change"),
    Ticket(id="T-3", text="Do you have an office in Lisbon?"),
    Ticket(id="T-4", text="The invoice for March is missing"),
]


@app.main
async def main(run: Run) -> DeskReport:
    replies = await asyncio.gather(
        *(run.request("desk.tickets", t, expect=Resolution, timeout=15) for t in TICKETS)
    )
    by_team: dict[str, int] = {}
    for r in replies:
        by_team[r.team] = by_team.get(r.team, 0) + 1
    return DeskReport(resolutions=list(replies), by_team=by_team)
