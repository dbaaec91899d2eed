"""Journal chunks: a run's records written together, encoded as one JSON array.

Every store writes the records of one call grouped per run, one chunk per run (a
Redis journal stream entry, a SQLite row): one write per run per batch instead of one
per record. :func:`chunk_by_run` does the grouping and counts what the run index keeps
(published events, model tokens); :func:`encode_chunk` encodes a chunk. Both stores
use these two functions, so a chunk reads back the same from either.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import _json
from .base import JournalEntry, tokens_of

if TYPE_CHECKING:
    from ..signing import Signer

__all__ = ["RunChunk", "chunk_by_run", "encode_chunk"]

log = logging.getLogger("agentbus.runtime")


@dataclass(slots=True)
class RunChunk:
    """One run's records of a batch, in order, with the counters they add to the run."""

    run_id: str
    entries: list[JournalEntry] = field(default_factory=list)
    #: ``published`` records: the run's event count grows by this.
    events: int = 0
    #: Model tokens of its ``model_call`` records.
    tokens: int = 0


def chunk_by_run(records: Sequence[JournalEntry]) -> list[RunChunk]:
    """Group ``journal`` per run (runs in order of first appearance, records in order)."""
    by_run: dict[str, RunChunk] = {}
    for entry in records:
        chunk = by_run.get(entry.run_id)
        if chunk is None:
            chunk = by_run[entry.run_id] = RunChunk(entry.run_id)
        chunk.entries.append(entry)
        kind = entry.record.get("kind")
        if kind == "published":
            chunk.events += 1
        elif kind == "model_call":
            chunk.tokens += tokens_of(entry.record)
    return list(by_run.values())


def encode_chunk(entries: Sequence[JournalEntry], signer: Signer | None = None) -> bytes:
    """Several records as one JSON array, encoded in one call.

    One ``to_json`` call for the whole list instead of one per record. A record's raw
    event goes in as a placeholder string that cannot occur in real data (it carries a
    random per-process nonce), and the encoded events replace the placeholders after.

    With a ``signer`` (a journal store's ``signer``, set by a runtime that signs)
    each record is signed here, the one place every record passes on its way to a store.

    Never fails because of a record's content: a record that cannot be encoded (a lone
    surrogate, an object that is not JSON) is written with those values replaced by
    text (:func:`agentbus._json.jsonable`) and a warning logged, so one bad record
    neither blocks the others nor the acks written with them.
    """
    if signer is not None:
        entries = [_signed(e, signer) for e in entries]
    try:
        return _encode_chunk(entries)
    except Exception:  # PydanticSerializationError, ValueError: find the record(s)
        return _encode_chunk([_encodable(e) for e in entries])


def _signed(entry: JournalEntry, signer: Signer) -> JournalEntry:
    try:
        record = signer.sign_record(entry.run_id, entry.record, entry.raw_event)
    except Exception:  # it cannot be encoded: sign what will be stored instead
        entry = _encodable(entry)
        record = signer.sign_record(entry.run_id, entry.record, entry.raw_event)
    return JournalEntry(entry.run_id, record, entry.raw_event)


def _encodable(entry: JournalEntry) -> JournalEntry:
    try:
        _json.dumps(entry.record)
        return entry
    except Exception as exc:
        log.warning(
            "a %r record of run %r cannot be encoded as JSON (%s); "
            "recording it with the offending values as text",
            _json.jsonable(entry.record.get("kind")),
            _json.jsonable(entry.run_id),
            exc,
        )
        return JournalEntry(entry.run_id, _json.jsonable(entry.record), entry.raw_event)


def _encode_chunk(entries: Sequence[JournalEntry]) -> bytes:
    raws = [e.raw_event for e in entries if e.raw_event is not None]
    if not raws:
        return _json.dumps([e.record for e in entries])
    body = _json.dumps(
        [e.record if e.raw_event is None else {**e.record, "event": _MARK} for e in entries]
    )
    parts = body.split(_MARK_JSON)
    if len(parts) != len(raws) + 1:  # unreachable unless the nonce leaked; be correct anyway
        return b"[" + b",".join(e.encode() for e in entries) + b"]"
    out = [parts[0]]
    for raw, part in zip(raws, parts[1:], strict=True):
        out.append(raw)
        out.append(part)
    return b"".join(out)


_MARK = f"\x00agentbus-event-{os.urandom(16).hex()}\x00"
_MARK_JSON = _json.dumps(_MARK)
