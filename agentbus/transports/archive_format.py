"""How an archived run is laid out, independent of the database holding it.

A journal archive (:class:`~agentbus.transports.contract.JournalArchive`, PostgreSQL in
:mod:`agentbus.transports.postgres_archive`) stores a finished run whole: its metadata,
a summary its queries use (:class:`RunSummary`: the agents, the event types, the model
tokens) and its records in :class:`ArchiveChunk` rows of up to :data:`CHUNK_RECORDS`
records each, in the order the hot store read them back (causal order, already sorted:
see ``read_journal``). A chunk's body is one JSON array of ``[seq, record]`` pairs,
encoded by :func:`archive_chunks`, the one encoder: the archiver computes the
:func:`digest` of the chunks it sends and the database computes it again from what it
stored, so "stored" means "stored exactly these records" before the hot copy is deleted.

Why chunks and not a row per record: a run reads back in a few hundred rows instead of
hundreds of thousands (one JSON parse each, as the Redis journal's stream entries are),
and the database compresses a large body (TOAST), which a 300-byte row never is. The
queries (runs by name, status, time, agent, type) are served by the run row and its
summary, never by the records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import _json
from .base import JournalRecord

__all__ = [
    "CHUNK_RECORDS",
    "ArchiveChunk",
    "RunSummary",
    "archive_chunks",
    "decode_chunk",
    "digest",
    "summarize",
]

#: Records per archived chunk at most (a 100,000-event run is a few hundred rows).
CHUNK_RECORDS = 1_000


@dataclass(frozen=True, slots=True)
class ArchiveChunk:
    """Records ``first`` .. ``first + n - 1`` of a run, encoded."""

    first: int
    n: int
    body: bytes


def archive_chunks(
    records: Sequence[JournalRecord], *, size: int = CHUNK_RECORDS
) -> list[ArchiveChunk]:
    """``records`` (in journal order) as chunks of ``size``: ``[[seq, record], ...]``."""
    return [
        ArchiveChunk(
            first=start,
            n=len(part),
            body=_json.dumps([[r.seq, r.record] for r in part]),
        )
        for start in range(0, len(records), size)
        for part in (records[start : start + size],)
    ]


def decode_chunk(run_id: str, body: bytes | str) -> list[JournalRecord]:
    """A chunk body back as records of ``run_id``."""
    return [
        JournalRecord(seq=str(seq), run_id=run_id, record=record)
        for seq, record in _json.loads(body)
    ]


def digest(bodies: Iterable[bytes]) -> str:
    """The SHA-256 (hex) of the chunk bodies concatenated in order.

    PostgreSQL computes the same with
    ``encode(sha256(string_agg(body, '' ORDER BY first)), 'hex')``.
    """
    h = hashlib.sha256()
    for body in bodies:
        h.update(body)
    return h.hexdigest()


@dataclass(slots=True)
class RunSummary:
    """What a run's queries need, computed once from its records when it is archived."""

    #: Every agent named by a record (publishers, handlers, callers), sorted.
    agents: list[str] = field(default_factory=list)
    #: Every event type published in the run, sorted.
    types: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    #: Tokens per model: ``{model: {"input": n, "output": n, "calls": n}}``.
    models: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "agents": self.agents,
            "types": self.types,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "models": self.models,
        }


def summarize(records: Iterable[JournalRecord]) -> RunSummary:
    """The :class:`RunSummary` of a run's records."""
    agents: set[str] = set()
    types: set[str] = set()
    out = RunSummary()
    for r in records:
        rec = r.record
        agent = rec.get("agent")
        if isinstance(agent, str) and agent:
            agents.add(agent)
        kind = rec.get("kind")
        if kind == "published":
            type_ = rec.get("type")
            if isinstance(type_, str) and type_:
                types.add(type_)
        elif kind == "model_call" and not rec.get("resumed"):
            # (a resumed call was answered from the journal: its first record counts)
            response = rec.get("response")
            usage = (response.get("usage") if isinstance(response, dict) else None) or {}
            request = rec.get("request")
            model = request.get("model") if isinstance(request, dict) else None
            name = str(model or rec.get("name") or "unknown")
            per = out.models.setdefault(name, {"input": 0, "output": 0, "calls": 0})
            per["calls"] += 1
            if isinstance(usage, dict):
                n_in = _int(usage.get("input_tokens"))
                n_out = _int(usage.get("output_tokens"))
                per["input"] += n_in
                per["output"] += n_out
                out.input_tokens += n_in
                out.output_tokens += n_out
    out.agents = sorted(agents)
    out.types = sorted(types)
    return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
