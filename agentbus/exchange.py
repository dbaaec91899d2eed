"""Export a run as CloudEvents JSON lines, and import such a file into any store.

Line 1 is an ``agentbus.run`` event carrying the run's metadata. Each published event is
written as itself (a CloudEvent), with the journal's own bookkeeping for it in the
``journalrecord`` extension; every other journal record (deliveries, outcomes, model and
tool calls, steps) is an ``agentbus.journal.<kind>`` event whose data is the record. The
file therefore holds the run's complete journal, in order, and the events can be read by
any CloudEvents tool. Secrets are masked on the way out (:func:`agentbus.redact.redact`): an
export is made to leave the system.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import UsageError
from .redact import redact
from .transports import JournalEntry, JournalRecord, RunInfo, Transport

__all__ = ["export_lines", "import_file", "parse_lines"]

SOURCE = "agentbus/journal"


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)


def export_lines(run: RunInfo, records: Iterable[JournalRecord]) -> Iterator[str]:
    """The run as JSON lines (without newlines), secrets masked."""
    yield _dumps(
        {
            "specversion": "1.0",
            "id": run.run_id,
            "source": SOURCE,
            "type": "agentbus.run",
            "subject": run.run_id,
            "datacontenttype": "application/json",
            "data": redact(run.to_dict()),
        }
    )
    for rec in records:
        body = redact(rec.record)
        if rec.kind == "published" and isinstance(body.get("event"), dict):
            event = dict(body["event"])
            event["journalrecord"] = _dumps({k: v for k, v in body.items() if k != "event"})
            yield _dumps(event)
        else:
            yield _dumps(
                {
                    "specversion": "1.0",
                    "id": f"{run.run_id}-{rec.seq}",
                    "source": SOURCE,
                    "type": f"agentbus.journal.{rec.kind}",
                    "subject": run.run_id,
                    "datacontenttype": "application/json",
                    "data": body,
                }
            )


def parse_lines(lines: Iterable[str]) -> tuple[RunInfo, list[dict[str, Any]]]:
    """Read an export back: the run and its journal records, in order.

    Raises :class:`UsageError` naming the line for malformed input.
    """
    run: RunInfo | None = None
    records: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"line {n}: not JSON ({exc})") from exc
        if not isinstance(obj, dict) or "type" not in obj:
            raise UsageError(f"line {n}: not a CloudEvent")
        kind = obj["type"]
        if kind == "agentbus.run":
            d = obj.get("data") or {}
            run = RunInfo(
                run_id=str(d["run_id"]),
                name=str(d.get("name", "")),
                status=str(d.get("status", "completed")),
                started=float(d.get("started") or 0.0),
                ended=d.get("ended"),
                meta=dict(d.get("meta") or {}),
            )
        elif isinstance(kind, str) and kind.startswith("agentbus.journal."):
            records.append(dict(obj.get("data") or {}))
        else:
            meta = obj.pop("journalrecord", None)
            record = json.loads(meta) if isinstance(meta, str) else {"kind": "published"}
            record["event"] = obj
            records.append(record)
    if run is None:
        raise UsageError("the file has no agentbus.run line; is it an agentbus export?")
    return run, records


async def import_file(transport: Transport, stream: IO[str]) -> RunInfo:
    """Load an exported run into ``transport``'s journal. Refuses a run id already present."""
    run, records = parse_lines(stream)
    if await transport.store.get_run(run.run_id) is not None:
        raise UsageError(f"run {run.run_id} already exists in {transport.url}")
    final = RunInfo(run.run_id, run.name, run.status, run.started, run.ended, meta=run.meta)
    await transport.store.save_run(
        RunInfo(run.run_id, run.name, "importing", run.started, None, meta=run.meta)
    )
    for i in range(0, len(records), 2000):
        await transport.store.write_journal(
            [JournalEntry(run.run_id, r) for r in records[i : i + 2000]]
        )
    await transport.store.save_run(final)
    return final


def export_to(path: Path, run: RunInfo, records: Iterable[JournalRecord]) -> int:
    """Write the export to ``path``; returns the number of lines."""
    n = 0
    with path.open("w", encoding="utf-8") as out:
        for line in export_lines(run, records):
            out.write(line)
            out.write("\n")
            n += 1
    return n
