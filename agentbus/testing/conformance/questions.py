"""Conformance checks of the question methods of :class:`JournalStore` (``ctx.ask_human``)."""

from __future__ import annotations

import asyncio
import time

from ...transports import Question, RunInfo, Transport

__all__ = ["QuestionChecks"]


def question(
    run_id: str, question_id: str, *, agent: str = "approver", deadline: float | None = None
) -> Question:
    return Question(
        run_id=run_id,
        question_id=question_id,
        agent=agent,
        event_id="E1",
        stream="conf.refunds",
        envelope=b'{"specversion":"1.0","id":"E1","source":"s","type":"t","data":{"n":1}}',
        question_type="conf.Refund",
        question={"amount": 120, "tags": []},
        summary="refund 120",
        expect="conf:Decision",
        schema={"type": "object", "properties": {"approve": {"type": "boolean"}}},
        asked=time.time(),
        deadline=deadline,
    )


class QuestionChecks:
    """Questions: stored once, answered once, claimed for wake-up once, withdrawn."""

    async def test_questions_are_opened_once_and_listed(self, transport: Transport) -> None:
        store = transport.store
        await store.save_run(RunInfo("run-q1", "asking", started=100.0))
        q = question("run-q1", "q-a")
        stored, created = await store.open_question(q)
        assert created
        assert stored.status == "open"
        assert stored.envelope == q.envelope
        assert stored.question == {"amount": 120, "tags": []}  # an empty list stays a list
        again, created = await store.open_question(question("run-q1", "q-a", agent="other"))
        assert not created
        assert again.agent == "approver"  # the first one stands
        await store.open_question(question("run-q2", "q-b"))
        assert [x.question_id for x in await store.list_questions()] == ["q-a", "q-b"]
        assert [x.question_id for x in await store.list_questions(run_id="run-q2")] == ["q-b"]
        assert await store.get_question("run-q1", "nope") is None
        got = await store.get_question("run-q1", "q-a")
        assert got is not None
        assert got.to_dict()["summary"] == "refund 120"

    async def test_a_question_is_answered_once(self, transport: Transport) -> None:
        store = transport.store
        await store.open_question(question("run-q3", "q-c"))
        now = time.time()
        results = await asyncio.gather(
            store.answer_question("run-q3", "q-c", {"approve": True}, by="alice", now=now),
            store.answer_question("run-q3", "q-c", {"approve": False}, by="bob", now=now),
        )
        assert sorted(ok for ok, _ in results) == [False, True]
        q = await store.get_question("run-q3", "q-c")
        assert q is not None
        assert q.status == "answered"
        winner = "alice" if results[0][0] else "bob"
        assert q.by == winner
        assert q.answer == {"approve": winner == "alice"}
        assert await store.list_questions() == []
        assert await store.answer_question("run-q3", "nope", {}, by="x", now=now) == (False, None)

    async def test_no_answer_after_the_deadline(self, transport: Transport) -> None:
        store = transport.store
        await store.open_question(question("run-q4", "q-d", deadline=time.time() - 1))
        ok, q = await store.answer_question(
            "run-q4", "q-d", {"approve": True}, by="x", now=time.time()
        )
        assert not ok
        assert q is not None
        assert q.status == "timed_out"

    async def test_wake_ups_are_claimed_once(self, transport: Transport) -> None:
        store = transport.store
        now = time.time()
        await store.open_question(question("run-q5", "q-e"))
        await store.open_question(question("run-q5", "q-f", deadline=now + 3600))
        await store.open_question(question("run-q6", "q-g", deadline=now - 1))
        await store.open_question(question("run-q6", "q-h", agent="someone-else"))
        first = await store.claim_questions(["approver"], now=now, grace=60)
        assert [(q.question_id, q.status) for q in first] == [("q-g", "timed_out")]
        assert await store.resumed_question(first[0])
        await store.answer_question("run-q5", "q-e", {"approve": True}, by="x", now=now)
        await store.answer_question("run-q6", "q-h", {"approve": True}, by="x", now=now)
        later = now + 1
        claims = await asyncio.gather(
            *(store.claim_questions(["approver"], now=later, grace=60) for _ in range(5))
        )
        claimed = [q for batch in claims for q in batch]
        assert [q.question_id for q in claimed] == ["q-e"]  # once, of five callers
        assert claimed[0].claimed == later
        assert claimed[0].answer == {"approve": True}
        # within the grace nobody claims it again; after it, someone does
        assert await store.claim_questions(["approver"], now=later + 10, grace=60) == []
        again = await store.claim_questions(["approver"], now=later + 61, grace=60)
        assert [q.question_id for q in again] == ["q-e"]
        assert not await store.resumed_question(claimed[0])  # that claim was taken over
        assert await store.resumed_question(again[0])
        assert await store.claim_questions(["approver"], now=later + 200, grace=60) == []
        other = await store.claim_questions(["someone-else"], now=later, grace=60)
        assert [q.question_id for q in other] == ["q-h"]

    async def test_a_question_past_its_deadline_times_out_when_claimed(
        self, transport: Transport
    ) -> None:
        store = transport.store
        now = time.time()
        await store.open_question(question("run-q7", "q-i", deadline=now + 5))
        assert await store.claim_questions(["approver"], now=now, grace=60) == []
        claimed = await store.claim_questions(["approver"], now=now + 6, grace=60)
        assert [(q.question_id, q.status) for q in claimed] == [("q-i", "timed_out")]
        assert await store.list_questions() == []

    async def test_withdrawn_questions_are_closed(self, transport: Transport) -> None:
        store = transport.store
        now = time.time()
        await store.open_question(question("run-q8", "q-j", deadline=now + 1))
        await store.open_question(question("run-q8", "q-k"))
        await store.open_question(question("run-q9", "q-l"))
        await store.answer_question("run-q8", "q-k", {"approve": False}, by="x", now=now)
        withdrawn = await store.withdraw_questions("run-q8", by="cancel", now=now)
        assert [(q.question_id, q.status, q.by) for q in withdrawn] == [
            ("q-j", "withdrawn", "cancel")
        ]
        assert [q.question_id for q in await store.list_questions()] == ["q-l"]
        ok, q = await store.answer_question("run-q8", "q-j", {}, by="x", now=now)
        assert not ok
        assert q is not None
        assert q.status == "withdrawn"
        claimed = await store.claim_questions(["approver"], now=now + 10, grace=60)
        assert [q.question_id for q in claimed] == ["q-k"]  # answered before the cancel

    async def test_questions_go_with_their_run(self, transport: Transport) -> None:
        store = transport.store
        await store.save_run(RunInfo("run-q10", "asking", started=100.0))
        await store.open_question(question("run-q10", "q-m", deadline=time.time() - 1))
        mark = await store.journal_mark("run-q10")
        assert mark is not None
        assert await store.drop_run("run-q10", mark=mark)
        assert await store.get_question("run-q10", "q-m") is None
        # whatever index entry is left is dropped when met, not fatal
        assert await store.list_questions() == []
        assert await store.claim_questions(["approver"], now=time.time(), grace=60) == []
