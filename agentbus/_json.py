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

__all__ = ["dumps", "jsonable", "loads"]


#: ``dumps(obj)``: ``obj`` (JSON-ready values only) as compact UTF-8 JSON bytes. The Rust
#: function itself, not a wrapper: a Python frame per call is a measurable share here.
dumps: Callable[[Any], bytes] = to_json

#: ``loads(raw)``: parse JSON text or UTF-8 bytes; raises :class:`ValueError` when invalid.
loads: Callable[[bytes | str], Any] = from_json


#: Containers nested deeper than this are cut by :func:`jsonable` (the encoder's own
#: limit is a little over 200).
_MAX_DEPTH = 64


def jsonable(value: Any, _depth: int = 0) -> Any:
    """``value`` with what :func:`dumps` cannot encode replaced by text that says what it was.

    Strings with lone surrogates get them as ``\\udXXX`` text, keys become strings,
    tuples lists, other objects their ``repr``, and containers nested past 64 levels a
    marker. Slow (a Python walk): only for a record that :func:`dumps` refused, so one
    bad value does not cost a whole batch of records.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if _depth >= _MAX_DEPTH:
        return f"<{type(value).__name__} nested deeper than {_MAX_DEPTH} levels>"
    if isinstance(value, dict):
        return {jsonable(str(k)): jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, _depth + 1) for v in value]
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return jsonable(text)
