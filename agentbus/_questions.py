"""Asking a person from a handler and waiting durably (``ctx.ask_human``).

A handler that asks gets the answer at once when there is one (its delivery was woken
up for it); otherwise the question is stored (:meth:`JournalStore.open_question`) and
the handler is unwound by :class:`Parked`, which the dispatcher turns into an ack with a
``parked`` record: no retry, no dead letter, no de-dup marker, and nothing held by any
process. When the question is answered (``agentbus answer``, :meth:`Runtime.answer`) or
its deadline passes, a runtime hosting the agent claims the wake-up
(:class:`Wakeups`, a poll every few seconds) and re-publishes the parked event to its
stream, marked for that one agent (the :data:`RESUME_ATTR` extension) and as a resume:
the dispatcher gives the new delivery the calls made before parking from the journal,
and ``ask_human`` finds the answer. See docs/durability.md, "Human in the loop".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from .context import Scope, current_scope
from .envelope import Envelope
from .errors import (
    InvalidAnswer,
    QuestionClosed,
    QuestionTimeout,
    ResumeMismatch,
    RunCancelled,
    TransportClosed,
    UnknownQuestion,
    UsageError,
)
from .journal import record
from .message import Message
from .transports import JournalEntry, Question

if TYPE_CHECKING:
    from ._writer import Writer
    from .signing import Signer
    from .transports import JournalStore, Transport

__all__ = [
    "CLAIM_GRACE_S",
    "RESUME_ATTR",
    "Parked",
    "QuestionSubstitute",
    "Questions",
    "Wakeups",
    "answer_question",
    "question_id",
    "validate_answer",
]

log = logging.getLogger("agentbus.runtime")
T = TypeVar("T", bound=BaseModel)

#: The extension attribute of a re-published (woken) event: the one agent it is for.
#: Other agents' subscriptions of the stream acknowledge it without a record.
RESUME_ATTR = "resumefor"
#: A wake-up claimed but not re-published within this long (its claimer died) is
#: claimed again by another runtime.
CLAIM_GRACE_S = 60.0
#: Answers a question from a recording (replay): (scope, agent, question index) -> the
#: recorded ``question_answered`` / ``question_timed_out`` record.
QuestionSubstitute = Callable[[Scope, str, int], Awaitable[dict[str, Any]]]


class Parked(BaseException):
    """Unwinds a handler whose question waits for its answer (the dispatcher parks the
    delivery). A ``BaseException``, so ``except Exception`` in a handler does not stop it."""

    def __init__(self, question_id: str) -> None:
        super().__init__(question_id)
        self.question_id = question_id


def question_id(event_id: str, agent: str, index: int) -> str:
    """The id of ``agent``'s ``index``-th question while handling ``event_id``: the same
    in every attempt, so a handler run again finds its question."""
    digest = hashlib.blake2b(f"{event_id}\0{agent}\0{index}".encode(), digest_size=8)
    return f"q{digest.hexdigest()}"


def _seconds(timeout: timedelta | float | None) -> float | None:
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    if not seconds > 0:
        raise UsageError(f"ask_human's timeout must be positive (or None), got {timeout!r}")
    return seconds


def _dump(question: BaseModel) -> Any:
    if not isinstance(question, BaseModel):
        raise UsageError(
            f"ask_human asks a pydantic model (a Message), got {type(question).__name__!r}"
        )
    return question.model_dump(mode="json")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class Questions:
    """``ask_human`` for one runtime: the store's questions, the run log, replay's hook."""

    def __init__(self, store: JournalStore, writer: Writer) -> None:
        self._store = store
        self._writer = writer
        #: Answers questions from a recording (replay installs one); ``None``: ask people.
        self.substitute: QuestionSubstitute | None = None

    async def ask(
        self,
        question: BaseModel,
        *,
        expect: type[T],
        timeout: timedelta | float | None,
        agent: str | None,
        summary: str | None,
    ) -> T:
        scope = current_scope()
        if scope is None or scope.event is None or not scope.event.runid:
            raise UsageError(
                "ask_human can only be called from a handler, while it handles an event"
            )
        if not (isinstance(expect, type) and issubclass(expect, BaseModel)):
            raise UsageError(f"ask_human's expect= must be a pydantic model class, got {expect!r}")
        seconds = _seconds(timeout)
        env, who = scope.event, agent or scope.agent or "?"
        index = scope.questions
        scope.questions += 1
        qid = question_id(env.id, who, index)
        data = _dump(question)
        kind = question.message_type if isinstance(question, Message) else type(question).__name__
        fields: dict[str, Any] = {
            "question_id": qid,
            "agent": who,
            "event_id": env.id,
            "question_index": index,
            "question_type": kind,
        }
        if self.substitute is not None:  # replay: the recording answers, nobody is asked
            recorded = await self.substitute(scope, who, index)
            self._record(scope, "question_asked", **fields, question=data, substituted=True)
            outcome = {k: v for k, v in recorded.items() if k not in ("time", "kind")}
            self._record(
                scope, str(recorded.get("kind")), **{**outcome, **fields}, substituted=True
            )
            stored = Question.from_data(
                {**_blank(scope.run_id, qid, who, env.id), "deadline": recorded.get("deadline")},
                status="answered" if recorded.get("kind") == "question_answered" else "timed_out",
                answer=recorded.get("answer"),
            )
            return _settle(stored, expect)
        if scope.parking is None:
            raise UsageError(
                "ask_human cannot park the delivery of a broadcast handler (every replica "
                "would ask): ask from a shared handler"
            )
        found = await self._store.get_question(scope.run_id, qid)
        if found is None:
            now = time.time()
            stream, payload = scope.parking
            asked = Question(
                run_id=scope.run_id,
                question_id=qid,
                agent=who,
                event_id=env.id,
                stream=stream,
                envelope=payload,
                question_type=kind,
                question=data,
                summary=summary if summary is not None else _summary(data),
                expect=f"{expect.__module__}:{expect.__qualname__}",
                schema=expect.model_json_schema(),
                asked=now,
                deadline=None if seconds is None else now + seconds,
            )
            stored, created = await self._store.open_question(asked)
            if created:
                self._record(
                    scope,
                    "question_asked",
                    **fields,
                    question=data,
                    summary=stored.summary,
                    expect=stored.expect,
                    deadline=stored.deadline,
                )
        else:
            stored = found
        if (stored.question_type, _canonical(stored.question)) != (kind, _canonical(data)):
            raise ResumeMismatch(
                f"{who} resumed event {env.id} and asked question #{index} ({kind}), but its "
                f"earlier attempt asked another one there ({stored.question_type}); a resumed "
                "handler must ask the same questions in the same order"
            )
        return _settle(stored, expect)

    def _record(self, scope: Scope, kind: str, **fields: Any) -> None:
        if self._writer.recording:
            self._writer.record(JournalEntry(scope.run_id, record(kind, **fields)))


def _blank(run_id: str, qid: str, agent: str, event_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "question_id": qid,
        "agent": agent,
        "event_id": event_id,
        "stream": "",
        "question_type": "",
        "question": None,
        "summary": "",
        "expect": "",
        "schema": {},
        "asked": 0.0,
    }


def _summary(data: Any) -> str:
    text = json.dumps(data, separators=(", ", ": "), default=str)
    return text if len(text) <= 100 else text[:99] + "…"


def _settle(q: Question, expect: type[T]) -> T:
    """The answer as ``expect``, or what the question's state means for the handler."""
    if q.status == "answered":
        try:
            return expect.model_validate(q.answer)
        except ValidationError as exc:  # valid by its JSON schema, refused by a validator
            raise InvalidAnswer(
                f"the answer to question {q.question_id} does not fit {expect.__name__}: "
                f"{_pydantic_problem(exc)}"
            ) from None
    if q.status == "timed_out":
        raise QuestionTimeout(
            f"nobody answered question {q.question_id} before its deadline",
            question_id=q.question_id,
            deadline=q.deadline,
        )
    if q.status == "withdrawn":
        raise RunCancelled(f"run {q.run_id} was cancelled; its question {q.question_id} withdrawn")
    raise Parked(q.question_id)


# -- answering (the API and the CLI) ---------------------------------------------------------
def _loaded(ref: str) -> type[BaseModel] | None:
    """The class ``module:qualname`` when this process has imported it, else ``None``."""
    module, _, qualname = ref.partition(":")
    found: Any = sys.modules.get(module)
    for part in qualname.split(".") if found is not None else ():
        found = getattr(found, part, None)
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def _pydantic_problem(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(the answer)'}: {e['msg']}" for e in exc.errors()
    )


def validate_answer(q: Question, answer: Any) -> None:
    """Raise :class:`InvalidAnswer` when ``answer`` does not fit what ``q`` expects: with
    the expected class when this process has it, else with its JSON schema."""
    name = q.expect.rpartition(":")[2] or "the expected type"
    cls = _loaded(q.expect)
    if cls is not None:
        try:
            cls.model_validate(answer)
        except ValidationError as exc:
            raise InvalidAnswer(
                f"the answer to question {q.question_id} does not fit {name}: "
                f"{_pydantic_problem(exc)}"
            ) from None
        return
    import jsonschema  # type: ignore[import-untyped]

    problems = sorted(
        jsonschema.Draft202012Validator(q.schema).iter_errors(answer), key=lambda e: e.path
    )
    if problems:
        shown = "; ".join(
            f"{'.'.join(str(p) for p in e.absolute_path) or '(the answer)'}: {e.message}"
            for e in problems[:5]
        )
        raise InvalidAnswer(f"the answer to question {q.question_id} does not fit {name}: {shown}")


def _closed(q: Question) -> QuestionClosed:
    why = {
        "answered": f"was already answered{f' by {q.by}' if q.by else ''}",
        "timed_out": "timed out (its deadline passed unanswered)",
        "withdrawn": "was withdrawn (its run was cancelled)",
    }.get(q.status, f"is {q.status}")
    return QuestionClosed(f"question {q.question_id} of run {q.run_id} {why}", status=q.status)


async def find_question(store: JournalStore, run_id: str, question_id: str) -> Question:
    """The question ``question_id`` (or a unique prefix of it, among the run's open
    ones) of run ``run_id``; raises :class:`UnknownQuestion`."""
    q = await store.get_question(run_id, question_id)
    if q is not None:
        return q
    matches = [
        o
        for o in await store.list_questions(run_id=run_id)
        if o.question_id.startswith(question_id)
    ]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UnknownQuestion(
            f"question id prefix {question_id!r} is ambiguous in run {run_id}: "
            + ", ".join(m.question_id for m in matches[:5])
        )
    raise UnknownQuestion(f"run {run_id} has no question {question_id!r} (see: agentbus pending)")


async def answer_question(
    store: JournalStore, run_id: str, question_id: str, answer: Any, *, by: str
) -> Question:
    """Answer a waiting question (checked against what its handler expects) and journal
    ``question_answered``; the run resumes at a runtime's next wake-up poll.

    Raises :class:`UnknownQuestion`, :class:`QuestionClosed` (answered, timed out or
    withdrawn) or :class:`InvalidAnswer`.
    """
    q = await find_question(store, run_id, question_id)
    if q.status != "open":
        raise _closed(q)
    validate_answer(q, answer)
    ok, after = await store.answer_question(run_id, q.question_id, answer, by=by, now=time.time())
    if not ok or after is None:
        raise _closed(after or q)
    entry = record(
        "question_answered",
        question_id=q.question_id,
        agent=q.agent,
        event_id=q.event_id,
        answer=answer,
        by=by,
    )
    await store.write_journal([JournalEntry(run_id, entry)])
    return after


# -- waking up -----------------------------------------------------------------------------------
class Wakeups:
    """Claims the due wake-ups of the agents a runtime hosts and re-publishes their
    parked events (every ``interval`` seconds, and once at start)."""

    def __init__(
        self,
        transport: Transport,
        agents: Callable[[], Sequence[str]],
        signer: Signer | None,
        interval: float | None,
        recording: Callable[[], bool],
    ) -> None:
        self._transport = transport
        self._agents = agents
        self._signer = signer
        self._interval = interval
        self._recording = recording
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(self._interval), name="agentbus-wakeups"
            )

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=1.0)
            self._task = None

    async def _loop(self, interval: float) -> None:
        while True:
            try:
                await self.poll_once()
            except TransportClosed:
                return
            except Exception as exc:  # the store away: the next poll tries again
                log.warning("looking for answered questions failed: %s", exc)
            await asyncio.sleep(interval)

    async def poll_once(self) -> int:
        """Claim and re-publish what is due now; returns how many."""
        agents = sorted(set(self._agents()))
        if not agents:
            return 0
        store = self._transport.store
        claimed = await store.claim_questions(agents, now=time.time(), grace=CLAIM_GRACE_S)
        woken = 0
        for q in claimed:
            try:
                await self._wake(q)
                woken += 1
            except TransportClosed:
                raise
            except Exception as exc:  # claimed again after the grace, by us or another
                log.warning(
                    "could not resume question %s of run %s: %s", q.question_id, q.run_id, exc
                )
        return woken

    async def _wake(self, q: Question) -> None:
        env = Envelope.decode(q.envelope)
        env.extensions[RESUME_ATTR] = q.agent
        if self._signer is not None:
            if self._signer.max_age is not None:
                env.time = Envelope(type=env.type, source=env.source).time  # sent now
            self._signer.sign(env)
        payload = env.encode(max_bytes=len(q.envelope) + 4096)
        records = []
        if q.status == "timed_out" and self._recording():
            entry = record(
                "question_timed_out",
                question_id=q.question_id,
                agent=q.agent,
                event_id=q.event_id,
                deadline=q.deadline,
            )
            records.append(JournalEntry(q.run_id, entry))
        # Not a new event (no `published` record): the same one, delivered again.
        await self._transport.publish(q.stream, payload, records=records)
        await self._transport.store.resumed_question(q)
