"""Questions to people on Redis: each run's in its own slot, indexes in ``{questions}``.

Layout (see :mod:`agentbus.keys`): ``questions:{R}`` is a hash per run with, per
question ``Q``, the field ``Q`` (what was asked: JSON, written once) and small fields
for its state: ``Q:s`` status, ``Q:d`` deadline, ``Q:a`` answer (JSON), ``Q:c`` when it
closed, ``Q:b`` by whom, ``Q:k`` when its wake-up was last claimed, ``Q:r`` when it was
re-published. Every change of state is one script on that hash, in the run's slot:
that is what makes an answer, a withdrawal or a claim atomic across processes.

Two sorted sets in the ``{questions}`` slot find them: ``question-index`` (every
question not resumed yet, by when asked: ``agentbus pending``) and, per agent,
``question-due:<agent>`` (by when its wake-up is due: the deadline while open, at once
when answered, the end of a claim's grace while being resumed). A runtime's poll reads
the due sets of the agents it hosts (one pipelined read) and claims what is due with the
run's script. The indexes are written by separate calls (another slot), ordered so that
what a crash leaves behind is an index entry too many, never one too few: an entry
whose question is gone or done is dropped when read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import Question
from .base import text as _s

if TYPE_CHECKING:
    from .redis_client import RedisClient

__all__ = ["ANSWER_SCRIPT", "CLAIM_SCRIPT", "OPEN_SCRIPT", "WITHDRAW_SCRIPT", "RedisQuestions"]

# KEYS[1]: the run's questions hash. ARGV: question id, its data, its deadline ("" none).
# Creates the question (open) unless it exists; 1 when created.
OPEN_SCRIPT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1] .. ':s', 'open', ARGV[1] .. ':d', ARGV[3])
return 1
"""

# ARGV: question id, answer (JSON), now, by. 'ok' when answered; else the status that
# refused it ('unknown', 'answered', 'withdrawn', 'timed_out': an open question past
# its deadline becomes timed_out here).
ANSWER_SCRIPT = """
local q = ARGV[1]
local s = redis.call('HGET', KEYS[1], q .. ':s')
if not s then return 'unknown' end
if s ~= 'open' then return s end
local d = redis.call('HGET', KEYS[1], q .. ':d')
if d and d ~= '' and tonumber(d) <= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], q .. ':s', 'timed_out', q .. ':c', ARGV[3])
  return 'timed_out'
end
redis.call('HSET', KEYS[1], q .. ':s', 'answered', q .. ':a', ARGV[2], q .. ':c', ARGV[3],
  q .. ':b', ARGV[4])
return 'ok'
"""

# ARGV: question id, now, grace. {'gone'} (unknown, withdrawn or resumed: drop its
# index entries), {'open', deadline or ''} (not due), {'busy', when the claim expires},
# or {'claimed', now}: answered, or open past its deadline (then timed_out here), and
# not claimed in the last `grace` seconds.
CLAIM_SCRIPT = """
local q = ARGV[1]
local now = tonumber(ARGV[2])
local s = redis.call('HGET', KEYS[1], q .. ':s')
if not s or s == 'withdrawn' or redis.call('HEXISTS', KEYS[1], q .. ':r') == 1 then
  return {'gone'}
end
if s == 'open' then
  local d = redis.call('HGET', KEYS[1], q .. ':d')
  if not d or d == '' or tonumber(d) > now then return {'open', d or ''} end
  redis.call('HSET', KEYS[1], q .. ':s', 'timed_out', q .. ':c', ARGV[2])
end
local k = redis.call('HGET', KEYS[1], q .. ':k')
if k and tonumber(k) + tonumber(ARGV[3]) > now then
  return {'busy', tostring(tonumber(k) + tonumber(ARGV[3]))}
end
redis.call('HSET', KEYS[1], q .. ':k', ARGV[2])
return {'claimed', ARGV[2]}
"""

# ARGV: question id, the claim's time, now. 1 when the claim was still ours and the
# question is now resumed.
RESUMED_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1] .. ':k') ~= ARGV[2] then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1] .. ':r') == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1] .. ':r', ARGV[3])
return 1
"""

# ARGV: now, by. Withdraws every open question of the run; returns their ids.
WITHDRAW_SCRIPT = """
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, -2) == ':s' and all[i + 1] == 'open' then
    local q = string.sub(f, 1, -3)
    redis.call('HSET', KEYS[1], f, 'withdrawn', q .. ':c', ARGV[1], q .. ':b', ARGV[2])
    out[#out + 1] = q
  end
end
return out
"""

_STATE = ("s", "a", "c", "b", "k", "r")


def _member(run_id: str, question_id: str) -> str:
    return f"{run_id} {question_id}"


def _num(value: Any) -> float | None:
    return None if value is None or value == b"" else float(_s(value))


def _parse(values: Sequence[Any]) -> Question | None:
    """A question from its data field and state fields (HMGET order: :data:`_STATE`)."""
    data, status, answer, closed, by, claimed, resumed = values
    if data is None or status is None:
        return None
    return Question.from_data(
        json.loads(data),
        status=_s(status),
        answer=None if answer is None else json.loads(answer),
        closed=_num(closed),
        by=None if by is None else _s(by),
        claimed=_num(claimed),
        resumed=_num(resumed),
    )


class RedisQuestions:
    """The question half of the Redis journal store (see the module docstring)."""

    def __init__(self, client: RedisClient) -> None:
        self._c = client
        self.keys = client.keys

    @property
    def _r(self) -> Any:
        return self._c.r

    def _fields(self, question_id: str) -> list[str]:
        return [question_id, *(f"{question_id}:{f}" for f in _STATE)]

    async def get(self, run_id: str, question_id: str) -> Question | None:
        key = self.keys.questions(run_id)
        values = await self._c.idempotent(lambda: self._r.hmget(key, self._fields(question_id)))
        return _parse(values)

    async def open(self, q: Question) -> tuple[Question, bool]:
        key = self.keys.questions(q.run_id)
        deadline = "" if q.deadline is None else repr(q.deadline)
        data = json.dumps(q.data())
        created = await self._c.idempotent(
            lambda: self._r.eval(OPEN_SCRIPT, 1, key, q.question_id, data, deadline)
        )
        stored = await self.get(q.run_id, q.question_id)
        assert stored is not None
        if stored.status == "open":
            # After the question (a crash in between leaves it unindexed, but its
            # delivery unacknowledged: the redelivered handler asks again, and lands here).
            await self._index(stored)
        return stored, bool(created)

    async def _index(self, q: Question) -> None:
        member = _member(q.run_id, q.question_id)

        async def go() -> None:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.zadd(self.keys.question_index(), {member: q.asked}, nx=True)
                if q.deadline is not None:
                    pipe.zadd(self.keys.question_due(q.agent), {member: q.deadline}, nx=True)
                await pipe.execute()

        await self._c.idempotent(go)

    async def _due_now(self, q: Question, now: float) -> None:
        due, member = self.keys.question_due(q.agent), _member(q.run_id, q.question_id)
        await self._c.idempotent(lambda: self._r.zadd(due, {member: now}))

    async def _unindex(self, run_id: str, question_id: str, agent: str | None) -> None:
        member = _member(run_id, question_id)

        async def go() -> None:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.zrem(self.keys.question_index(), member)
                if agent is not None:
                    pipe.zrem(self.keys.question_due(agent), member)
                await pipe.execute()

        await self._c.idempotent(go)

    async def list_open(self, run_id: str | None) -> list[Question]:
        if run_id is not None:
            return sorted(
                (q for q in await self._all_of(run_id) if q.status == "open"),
                key=lambda q: (q.asked, q.question_id),
            )
        members = await self._c.idempotent(
            lambda: self._r.zrange(self.keys.question_index(), 0, -1)
        )
        wanted = [tuple(_s(m).split(" ", 1)) for m in members]
        runs = sorted({run for run, _ in wanted})
        found: dict[tuple[str, str], Question] = {}
        for run in runs:
            for each in await self._all_of(run):
                found[(each.run_id, each.question_id)] = each
        out = []
        for run, qid in wanted:
            q = found.get((run, qid))
            if q is None or q.status == "withdrawn" or q.resumed is not None:
                # Gone (its run pruned), withdrawn or done: an index entry too many.
                await self._unindex(run, qid, None if q is None else q.agent)
            elif q.status == "open":
                out.append(q)
        return sorted(out, key=lambda q: (q.asked, q.question_id))

    async def _all_of(self, run_id: str) -> list[Question]:
        key = self.keys.questions(run_id)
        flat = await self._c.idempotent(lambda: self._r.hgetall(key))
        fields = {_s(k): v for k, v in flat.items()}
        out = []
        for name, value in fields.items():
            if ":" in name:
                continue
            q = _parse([value, *(fields.get(f"{name}:{f}") for f in _STATE)])
            if q is not None:
                out.append(q)
        return out

    async def answer(
        self, run_id: str, question_id: str, answer: Any, by: str, now: float
    ) -> tuple[bool, Question | None]:
        q = await self.get(run_id, question_id)
        if q is None:
            return False, None
        # Due first, then answered, then due again: a crash between leaves an entry that
        # the claim finds still open (and sets back), never an answer nobody wakes up.
        await self._due_now(q, now)
        key = self.keys.questions(run_id)
        # Not retried: a lost reply after the answer was stored would read as refused.
        verdict = _s(
            await self._c.call(
                lambda: self._r.eval(
                    ANSWER_SCRIPT, 1, key, question_id, json.dumps(answer), repr(now), by
                )
            )
        )
        if verdict == "ok":
            await self._due_now(q, now)
        return verdict == "ok", await self.get(run_id, question_id)

    async def withdraw(self, run_id: str, by: str, now: float) -> list[Question]:
        key = self.keys.questions(run_id)
        ids = await self._c.call(lambda: self._r.eval(WITHDRAW_SCRIPT, 1, key, repr(now), by))
        out = []
        for raw in ids:
            q = await self.get(run_id, _s(raw))
            if q is not None:
                await self._unindex(q.run_id, q.question_id, q.agent)
                out.append(q)
        return out

    async def claim(
        self, agents: Sequence[str], now: float, grace: float, limit: int
    ) -> list[Question]:
        if not agents:
            return []

        async def due() -> list[Any]:
            async with self._r.pipeline(transaction=False) as pipe:
                for agent in agents:
                    pipe.zrangebyscore(
                        self.keys.question_due(agent), "-inf", now, start=0, num=limit
                    )
                return list(await pipe.execute())

        replies = await self._c.idempotent(due)
        out: list[Question] = []
        for agent, members in zip(agents, replies, strict=True):
            for raw in members:
                run_id, _, question_id = _s(raw).partition(" ")
                claimed = await self._claim_one(agent, run_id, question_id, now, grace)
                if claimed is not None:
                    out.append(claimed)
        return out

    async def _claim_one(
        self, agent: str, run_id: str, question_id: str, now: float, grace: float
    ) -> Question | None:
        key, due = self.keys.questions(run_id), self.keys.question_due(agent)
        member = _member(run_id, question_id)
        reply = await self._c.call(
            lambda: self._r.eval(CLAIM_SCRIPT, 1, key, question_id, repr(now), repr(grace))
        )
        verdict = _s(reply[0])
        if verdict == "gone":
            await self._unindex(run_id, question_id, agent)
            return None
        if verdict == "busy":  # another process resumes it; look again when its claim ends
            until = float(_s(reply[1]))
            await self._c.idempotent(lambda: self._r.zadd(due, {member: until}))
            return None
        if verdict == "open":  # an answer that did not land: back to its deadline
            deadline = _s(reply[1])
            if deadline:
                await self._c.idempotent(lambda: self._r.zadd(due, {member: float(deadline)}))
            else:
                await self._c.idempotent(lambda: self._r.zrem(due, member))
            # An answer landing meanwhile set it due before our change: set it again.
            after = await self.get(run_id, question_id)
            if after is not None and after.status == "answered":
                await self._due_now(after, now)
            return None
        # Claimed: due again when the claim's grace ends (a crash before the re-publish
        # is retried then); resumed() removes the entries.
        await self._c.idempotent(lambda: self._r.zadd(due, {member: now + grace}))
        return await self.get(run_id, question_id)

    async def resumed(self, q: Question, now: float) -> bool:
        key = self.keys.questions(q.run_id)
        claimed = "" if q.claimed is None else repr(q.claimed)
        done = await self._c.call(
            lambda: self._r.eval(RESUMED_SCRIPT, 1, key, q.question_id, claimed, repr(now))
        )
        if done:
            await self._unindex(q.run_id, q.question_id, q.agent)
        return bool(done)
