"""Fast JSON for the hot path: pydantic-core's Rust encoder and parser.

Every event is encoded once, decoded once per delivery, and every journal record is
encoded once; the standard library's ``json`` costs about four times as much per call
(measured in ``benchmarks/README.md``). Output is compact UTF-8 JSON, like
``json.dumps(obj, separators=(",", ":"), ensure_ascii=False)``; parse errors raise
:class:`ValueError`. Callers that report a precise error re-parse with :mod:`json`.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import from_json, to_json

__all__ = ["dumps", "loads"]


def dumps(obj: Any) -> bytes:
    """``obj`` (JSON-ready values only) as compact UTF-8 JSON bytes."""
    return to_json(obj)


def loads(raw: bytes | str) -> Any:
    """Parse JSON text or UTF-8 bytes. Raises :class:`ValueError` when invalid."""
    return from_json(raw)
