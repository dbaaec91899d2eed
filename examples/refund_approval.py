"""Refunds with a human in the loop: above a threshold, a person approves or refuses.

The ``refunds`` agent scores each refund request with a (stand-in) risk tool; a refund of
more than ``$100`` needs a person's approval, so its handler asks one
(``ctx.ask_human``) and waits **durably**: its delivery is parked, no process holds it,
and workers may stop and start meanwhile. The question shows in ``agentbus pending``;
``agentbus answer RUN QUESTION JSON`` answers it, and the handler runs again from the
start on whichever process hosts the agent: the risk check it made before asking is
answered from the journal (not made again), and ``ask_human`` returns the answer.

Offline and self-contained: this app's driver plays the person, answering through the
real CLI in a subprocess (it prints the command, so you see how).

    agentbus run examples/refund_approval.py
    agentbus trace <run id>      # the question, its answer, the parked and woken delivery
    agentbus replay <run id>     # identical: the answer comes from the recording
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from agentbus import Agent, App, Context, Message, QuestionTimeout, Run, handle

#: Refunds above this many dollars need a person's approval.
THRESHOLD = 100.0


class RefundRequest(Message, type="refunds.Request"):
    order_id: str
    amount: float
    reason: str


class RefundApproval(Message, type="refunds.Approval"):
    """The question: shown to the approver (``agentbus pending``)."""

    order_id: str
    amount: float
    reason: str
    risk: str


class Decision(BaseModel):
    """The answer the handler expects: ``{"approve": true, "note": "..."}``."""

    approve: bool
    note: str = ""


class RefundResult(Message, type="refunds.Result"):
    order_id: str
    amount: float
    status: str  # refunded, refused or expired
    decided_by: str
    note: str = ""


class Refunds(Agent, name="refunds"):
    @handle("refunds.requests")
    async def refund(self, req: RefundRequest, ctx: Context) -> RefundResult:
        async def score() -> dict[str, Any]:  # a fraud-scoring service, say
            return {"risk": "low" if req.amount < 1_000 else "high"}

        risk = (await ctx.invoke("tool", "risk_score", req.model_dump(), score))["risk"]
        if req.amount <= THRESHOLD:
            return RefundResult(
                order_id=req.order_id, amount=req.amount, status="refunded", decided_by="policy"
            )
        question = RefundApproval(
            order_id=req.order_id, amount=req.amount, reason=req.reason, risk=risk
        )
        try:
            decision = await ctx.ask_human(
                question,
                expect=Decision,
                timeout=timedelta(days=3),
                summary=f"refund ${req.amount:.2f} on {req.order_id} ({req.reason}, risk {risk})?",
            )
        except QuestionTimeout:  # nobody answered within 3 days: refuse by default
            return RefundResult(
                order_id=req.order_id, amount=req.amount, status="expired", decided_by="timeout"
            )
        return RefundResult(
            order_id=req.order_id,
            amount=req.amount,
            status="refunded" if decision.approve else "refused",
            decided_by="approver",
            note=decision.note,
        )


app = App("refund-approval", [Refunds])


async def _agentbus(run: Run, *args: str) -> str:
    """Run ``agentbus ARGS`` as a subprocess, as a person at a terminal would."""
    print("$ agentbus " + " ".join(shlex.quote(a) for a in args), file=sys.stderr)
    # The store this run is in (`agentbus run --url ...`); a URL whose password is
    # masked is left to $AGENTBUS_URL, which the command inherits.
    url = str(getattr(run.runtime, "transport").url)  # noqa: B009 (Bus does not name it)
    where = ["--url", url] if "***" not in url else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentbus",
        *args,
        *where,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"agentbus {args[0]} failed: {err.decode().strip()}")
    print(out.decode().rstrip(), file=sys.stderr)
    return out.decode()


@app.main
async def main(run: Run) -> dict[str, object]:
    small = RefundRequest(order_id="A-1001", amount=40.0, reason="damaged box")
    large = RefundRequest(order_id="A-1002", amount=480.0, reason="never arrived")
    auto = await run.request("refunds.requests", small, expect=RefundResult, timeout=60)
    # The large one waits for a person: request it, and answer while it waits.
    waiting = asyncio.ensure_future(
        run.request("refunds.requests", large, expect=RefundResult, timeout=120)
    )
    for _ in range(600):
        questions = await run.pending()
        if questions:
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("the approval question never showed up")
    # What an approver sees and does (on stderr: `agentbus run --json` prints only JSON).
    await _agentbus(run, "pending", "--run", run.run_id)
    question = questions[0]
    await _agentbus(
        run,
        "answer",
        run.run_id,
        question.question_id,
        json.dumps({"approve": True, "note": "carrier confirmed the loss"}),
    )
    decided = await waiting
    return {
        "auto": auto.model_dump(),
        "question": question.summary,
        "approved": decided.model_dump(),
    }
