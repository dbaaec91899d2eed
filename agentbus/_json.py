"""Fast JSON for the hot path: pydantic-core's Rust encoder and parser.

Every event is encoded once, decoded once per delivery, and every journal record is
encoded once; the standard library's ``json`` costs about four times as much per call
(measured in ``benchmarks/README.md``). Output is compact UTF-8 JSON, like
``json.dumps(obj, separators=(",", ":"), ensure_ascii=False)``; parse errors raise
:class:`ValueError`. Callers that report a precise error re-parse with :mod:`json`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic_core import from_json, to_json

__all__ = ["dumps", "loads"]


#: ``dumps(obj)``: ``obj`` (JSON-ready values only) as compact UTF-8 JSON bytes. The Rust
#: function itself, not a wrapper: a Python frame per call is a measurable share here.
dumps: Callable[[Any], bytes] = to_json

#: ``loads(raw)``: parse JSON text or UTF-8 bytes; raises :class:`ValueError` when invalid.
loads: Callable[[bytes | str], Any] = from_json
