"""What a run's model calls cost, from a price table the user supplies.

agentbus ships no provider prices (they change, and differ by contract); the offline
example model is the only one it prices (at zero). A price table is JSON mapping a model
name to US dollars per million input and output tokens::

    {"gpt-4o-mini": {"input": 0.15, "output": 0.60},
     "gpt-4o": {"input": 2.50, "output": 10.00}}

given as a file path or inline, with ``agentbus runs --prices`` or
``$AGENTBUS_MODEL_PRICES``. A run whose calls used a model missing from the table has
no cost (shown ``-``), rather than a cost that silently leaves those calls out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .transports.archive_format import RunSummary

__all__ = ["ModelPrice", "Prices", "load_prices"]

#: The offline example model costs nothing; nothing else is priced by default.
_BUILT_IN = {"agentbus-offline": (0.0, 0.0)}


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """US dollars per million tokens."""

    input: float
    output: float


class Prices:
    """A price table: :meth:`cost` of a run's :class:`RunSummary`."""

    def __init__(self, table: Mapping[str, ModelPrice] | None = None) -> None:
        self.table = {name: ModelPrice(*p) for name, p in _BUILT_IN.items()}
        self.table.update(table or {})

    def cost(self, summary: RunSummary) -> float | None:
        """Dollars the run's model calls cost; ``None`` when a model used is not priced."""
        total = 0.0
        for model, used in summary.models.items():
            price = self.table.get(model)
            if price is None:
                return None
            total += (used["input"] * price.input + used["output"] * price.output) / 1e6
        return total


def load_prices(spec: str | None = None) -> Prices:
    """The price table in ``spec`` (a JSON file path or inline JSON), else in
    ``$AGENTBUS_MODEL_PRICES``, else the built-in one. Raises :class:`UsageError` for a
    table that does not parse."""
    spec = spec or os.environ.get("AGENTBUS_MODEL_PRICES")
    if not spec:
        return Prices()
    text = spec if spec.lstrip().startswith("{") else _read(spec)
    try:
        raw = json.loads(text)
        table = {
            str(name): ModelPrice(float(p["input"]), float(p["output"])) for name, p in raw.items()
        }
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UsageError(
            f"invalid model price table ({exc}): expected JSON like "
            '{"gpt-4o-mini": {"input": 0.15, "output": 0.6}} (dollars per million tokens)'
        ) from None
    return Prices(table)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the model price table {path!r}: {exc.strerror}") from None
