"""Compare two runs' events, ignoring what legitimately differs (ids, times, inbox names).

Runs with concurrent agents publish in a different order each time, so events are matched
by *causal identity* rather than position: an event's key is its normalised content (type,
source, topic, data, partition key) plus the key of the event that caused it. Two runs are
identical when their events match one to one; the first divergence is reported at the
earliest recorded event that has no counterpart.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .errors import DecodeError
from .message import lookup_type
from .redact import redact
from .schema import VERSION_ATTRIBUTE, upcast, version_of

__all__ = ["Divergence", "RunDiff", "causal_keys", "compare_events", "diff_runs", "normalize"]

_INBOX = "_inbox."


def _topic(name: Any) -> Any:
    # Reply inboxes are named after the consumer that owns them; that differs by design.
    return "_inbox" if isinstance(name, str) and name.startswith(_INBOX) else name


def normalize(event: dict[str, Any]) -> dict[str, Any]:
    """The parts of an event that must be reproduced: type, source, topic, subject, key, data."""
    data = _current_shape(event)
    if event.get("type") == "agentbus.Error" and isinstance(data, dict):
        # Error replies name the failed event by id, and ids differ between runs by design.
        data = {k: v for k, v in data.items() if k != "event_id"}
    return {
        "type": event.get("type"),
        "source": event.get("source"),
        "topic": _topic(event.get("topic")),
        "subject": event.get("subject"),
        "partitionkey": event.get("partitionkey"),
        "replyto": _topic(event.get("replyto")),
        # Masked: the journal keeps call responses masked, so a secret a handler passes on
        # from one reads "***" on replay while the recorded event holds it.
        "data": redact(data),
    }


def _current_shape(event: dict[str, Any]) -> Any:
    """The event's data in the shape of this code's version of its type: a run recorded
    under an older version compares equal to a replay that publishes the new one when the
    upcasters map the one onto the other (:mod:`agentbus.schema`)."""
    data = event.get("data")
    cls = lookup_type(str(event.get("type")))
    if cls is None or (VERSION_ATTRIBUTE not in event and cls.message_version == 1):
        return data
    try:
        current = upcast(cls.message_type, data, version_of(event), cls.message_version)
        # As today's class writes it (defaults of fields added since filled in).
        return cls.model_validate(current).model_dump(mode="json")
    except (DecodeError, ValidationError):
        return data  # compared as recorded: the replay's own decoding reports the error


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def causal_keys(events: list[dict[str, Any]]) -> list[str]:
    """One key per event: a hash of its normalised content and its cause's key."""
    by_id: dict[str, str] = {}
    keys: list[str] = []
    for event in events:
        parent = by_id.get(str(event.get("causationid"))) if event.get("causationid") else None
        digest = hashlib.sha256(
            (_canonical(normalize(event)) + "|" + (parent or "")).encode()
        ).hexdigest()[:24]
        by_id[str(event.get("id"))] = digest
        keys.append(digest)
    return keys


def _parent_keys(events: list[dict[str, Any]], keys: list[str]) -> list[str | None]:
    index = {str(e.get("id")): k for e, k in zip(events, keys, strict=True)}
    return [index.get(str(e.get("causationid"))) if e.get("causationid") else None for e in events]


@dataclass
class Divergence:
    """Where a run departs from the recording."""

    position: int
    reason: str
    expected: dict[str, Any] | None = None
    actual: dict[str, Any] | None = None

    @property
    def payload_diff(self) -> str:
        a = json.dumps(self.expected, indent=2, sort_keys=True, default=str).splitlines()
        b = json.dumps(self.actual, indent=2, sort_keys=True, default=str).splitlines()
        return "\n".join(difflib.unified_diff(a, b, "expected", "actual", lineterm=""))

    def describe(self) -> str:
        lines = [f"diverged at event #{self.position}: {self.reason}"]
        if self.expected is not None or self.actual is not None:
            lines.append(self.payload_diff)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "reason": self.reason,
            "expected": self.expected,
            "actual": self.actual,
            "diff": self.payload_diff,
        }


def _match(
    a: list[dict[str, Any]], b: list[dict[str, Any]]
) -> tuple[list[int], list[int], list[str], list[str]]:
    """Indices of ``a`` and of ``b`` that found no counterpart, plus both key lists."""
    ka, kb = causal_keys(a), causal_keys(b)
    pool: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(kb):
        pool[k].append(i)
    unmatched_a = []
    for i, k in enumerate(ka):
        if pool.get(k):
            pool[k].pop(0)
        else:
            unmatched_a.append(i)
    unmatched_b = sorted(i for rest in pool.values() for i in rest)
    return unmatched_a, unmatched_b, ka, kb


def compare_events(
    recorded: list[dict[str, Any]], produced: list[dict[str, Any]]
) -> Divergence | None:
    """``None`` when ``produced`` reproduces ``recorded``; else the first divergence."""
    missing, extra, ka, kb = _match(recorded, produced)
    if not missing and not extra:
        return None
    pa, pb = _parent_keys(recorded, ka), _parent_keys(produced, kb)
    if missing:
        i = missing[0]
        want = normalize(recorded[i])
        # The closest produced event: same cause, same sender and type, different content.
        for j in extra:
            got = normalize(produced[j])
            if pb[j] == pa[i] and got["source"] == want["source"] and got["type"] == want["type"]:
                return Divergence(
                    i, f"{want['type']} from {want['source']} has different content", want, got
                )
        for j in extra:
            if pb[j] == pa[i] and normalize(produced[j])["source"] == want["source"]:
                got = normalize(produced[j])
                return Divergence(
                    i,
                    f"{want['source']} published {got['type']} instead of {want['type']}",
                    want,
                    got,
                )
        return Divergence(i, f"{want['type']} from {want['source']} was not produced", want, None)
    j = extra[0]
    got = normalize(produced[j])
    return Divergence(len(recorded), f"unexpected {got['type']} from {got['source']}", None, got)


@dataclass
class RunDiff:
    """How two runs differ: the first divergence and what only one of them has."""

    a: str
    b: str
    first: Divergence | None
    only_in_a: list[dict[str, Any]] = field(default_factory=list)
    only_in_b: list[dict[str, Any]] = field(default_factory=list)
    shared: int = 0

    @property
    def identical(self) -> bool:
        return self.first is None

    def describe(self) -> str:
        if self.first is None:
            return f"runs {self.a} and {self.b} are identical ({self.shared} events)"
        lines = [
            f"runs {self.a} and {self.b} part at event #{self.first.position} of {self.a}",
            f"  shared events: {self.shared}; only in {self.a}: {len(self.only_in_a)}; "
            f"only in {self.b}: {len(self.only_in_b)}",
            self.first.describe(),
        ]
        for label, items in ((self.a, self.only_in_a), (self.b, self.only_in_b)):
            for e in items[:10]:
                lines.append(
                    f"  only in {label}: #{e['index']} {e['type']} → {e['topic']} from {e['source']}"
                )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "identical": self.identical,
            "shared": self.shared,
            "first": None if self.first is None else self.first.to_dict(),
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
        }


def diff_runs(a_id: str, a: list[dict[str, Any]], b_id: str, b: list[dict[str, Any]]) -> RunDiff:
    """Compare two runs' published events (as recorded envelopes, in publish order)."""
    missing, extra, _, _ = _match(a, b)

    def brief(events: list[dict[str, Any]], i: int) -> dict[str, Any]:
        n = normalize(events[i])
        return {
            "index": i,
            "type": n["type"],
            "topic": n["topic"],
            "source": n["source"],
            "data": n["data"],
        }

    return RunDiff(
        a=a_id,
        b=b_id,
        first=compare_events(a, b),
        only_in_a=[brief(a, i) for i in missing],
        only_in_b=[brief(b, j) for j in extra],
        shared=len(a) - len(missing),
    )
