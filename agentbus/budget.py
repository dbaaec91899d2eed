"""Run budgets: limits on a run's tokens, cost, model calls, tool calls and wall clock.

``rt.run("name", budget=Budget(tokens=10_000, model_calls=20))`` stores the limits in
the run's metadata, so every process handling the run's events sees them. Every live
model or tool call (:meth:`Context.invoke`) is reserved against the run's spend in the
journal store before it is made (:meth:`JournalStore.reserve`: one atomic check-and-add
for all processes); one that does not fit raises :class:`~agentbus.errors.BudgetExceeded`
instead, records ``budget_exceeded`` and ends the run with that status. See
docs/durability.md, "Budgets".
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ._bus import CallKind
from .costs import ModelPrice, Prices, load_prices
from .errors import BudgetExceeded
from .journal import record
from .transports import JournalEntry

if TYPE_CHECKING:
    from .context import Scope
    from .transports import JournalStore

__all__ = ["Budget"]

#: The status of a run that hit one of its limits.
BUDGET_EXCEEDED = "budget_exceeded"
#: The spend counters, in the order they are shown.
COUNTERS = ("tokens", "cost", "model_calls", "tool_calls")
_MODEL_LIMITS = ("model_calls", "tokens", "cost")
#: Runs whose limits this process has read (bounded: a long-lived worker sees many runs).
_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits for one run; ``None`` leaves a kind unlimited.

    ``tokens``: model tokens, input plus output. ``cost``: US dollars, priced with
    ``prices`` (model name to dollars per million tokens), else with the table in
    ``$AGENTBUS_MODEL_PRICES`` of each process (:func:`~agentbus.costs.load_prices`);
    a model call to a model without a price is refused when ``cost`` is limited.
    ``model_calls`` / ``tool_calls``: live calls. ``deadline``: wall-clock time from the
    run's start (a :class:`~datetime.timedelta` or seconds) after which no call is made.
    """

    tokens: int | None = None
    cost: float | None = None
    model_calls: int | None = None
    tool_calls: int | None = None
    deadline: timedelta | float | None = None
    prices: Mapping[str, ModelPrice] | None = None

    def to_meta(self, started: float) -> dict[str, Any]:
        """The limits as stored in the run's metadata (``meta["budget"]``)."""
        out: dict[str, Any] = {
            name: getattr(self, name) for name in COUNTERS if getattr(self, name) is not None
        }
        if self.deadline is not None:
            seconds = (
                self.deadline.total_seconds()
                if isinstance(self.deadline, timedelta)
                else float(self.deadline)
            )
            out["deadline"] = started + seconds
        if self.prices is not None:
            out["prices"] = {
                m: {"input": p.input, "output": p.output} for m, p in self.prices.items()
            }
        return out


def budget_limits(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """A run's stored budget (see :meth:`Budget.to_meta`), ``None`` without one."""
    budget = meta.get("budget")
    return budget if isinstance(budget, dict) and budget else None


def budget_report(meta: Mapping[str, Any], records: Iterable[Any]) -> dict[str, Any] | None:
    """A budgeted run's spend against each limit, from its journal records:
    ``{counter: {"spent": x, "limit": y}, "deadline": {"at": t}, "exceeded": limit}``.

    Counted from the records (live calls: not substituted, not resumed, not refused)
    rather than read from the store's counters, so that it is the same for a run
    read back from the archive, whose counters are gone. ``cost`` is ``None`` when a
    model used has no price."""
    limits = budget_limits(meta)
    if limits is None:
        return None
    spent: dict[str, float | None] = dict.fromkeys(COUNTERS, 0.0)
    table = limits.get("prices")
    prices = (
        Prices({m: ModelPrice(p["input"], p["output"]) for m, p in table.items()})
        if isinstance(table, dict)
        else load_prices()
    )
    exceeded = None
    for rec in records:
        r = rec.record if hasattr(rec, "record") else rec
        kind = r.get("kind")
        if kind == BUDGET_EXCEEDED and exceeded is None:
            exceeded = r.get("limit")
        if kind not in ("model_call", "tool_call") or r.get("substituted"):
            continue
        if str(r.get("error", "")).startswith("BudgetExceeded"):
            continue  # refused before it was made
        counter = "model_calls" if kind == "model_call" else "tool_calls"
        spent[counter] = (spent[counter] or 0.0) + 1
        if kind != "model_call":
            continue
        response, request = r.get("response"), r.get("request")
        usage = response.get("usage") if isinstance(response, dict) else None
        n_in = n_out = 0
        if isinstance(usage, dict):
            n_in, n_out = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
        spent["tokens"] = (spent["tokens"] or 0.0) + n_in + n_out
        model = str((request.get("model") if isinstance(request, dict) else None) or r.get("name"))
        price = prices.table.get(model)
        cost = spent["cost"]
        spent["cost"] = (
            None
            if price is None or cost is None
            else cost + (n_in * price.input + n_out * price.output) / 1e6
        )
    out: dict[str, Any] = {
        n: {"spent": spent[n], "limit": limits[n]} for n in COUNTERS if n in limits
    }
    if "deadline" in limits:
        out["deadline"] = {"at": limits["deadline"]}
    out["exceeded"] = exceeded
    return out


def describe(spend: Mapping[str, Any]) -> str:
    """``tokens 812/1000, $0.12/$0.50, model calls 3/20`` for a terminal."""
    parts = []
    for name in COUNTERS:
        if name not in spend:
            continue
        spent, limit = spend[name]["spent"], spend[name]["limit"]
        if name == "cost":
            parts.append(f"${'-' if spent is None else format(spent, '.4f')}/${limit:.4f}")
        else:
            parts.append(f"{name.replace('_', ' ')} {int(spent)}/{int(limit)}")
    if "deadline" in spend:
        parts.append(
            "deadline " + time.strftime("%H:%M:%S", time.localtime(spend["deadline"]["at"]))
        )
    return ", ".join(parts)


class _Ticket:
    """A live model call's reservation, settled with its actual tokens and cost."""

    __slots__ = ("estimate", "model", "prices", "run_id")

    def __init__(self, run_id: str, estimate: float, model: str, prices: Prices | None) -> None:
        self.run_id = run_id
        self.estimate = estimate
        self.model = model
        self.prices = prices


class Budgets:
    """Reserves live calls against their runs' budgets (one per runtime).

    A run's limits are read from its metadata once per process and cached; a run
    without a budget costs that one read, and nothing per call.
    """

    def __init__(self, store: JournalStore, writer_record: Any) -> None:
        self._store = store
        self._record = writer_record
        self._limits: OrderedDict[str, dict[str, Any] | None] = OrderedDict()

    def know(self, run_id: str, limits: dict[str, Any] | None) -> None:
        """Cache a run's limits (the run's own process knows them without reading)."""
        self._limits[run_id] = limits
        if len(self._limits) > _CACHE_SIZE:
            self._limits.popitem(last=False)

    async def _limits_of(self, run_id: str) -> dict[str, Any] | None:
        if run_id in self._limits:
            return self._limits[run_id]
        info = await self._store.get_run(run_id)
        limits = budget_limits(info.meta) if info is not None else None
        self.know(run_id, limits)
        return limits

    async def before(
        self, kind: CallKind, name: str, request: Mapping[str, Any], scope: Scope
    ) -> _Ticket | None:
        """Reserve one live call; raises :class:`BudgetExceeded` when it does not fit."""
        limits = await self._limits_of(scope.run_id)
        if limits is None:
            return None
        deadline = limits.get("deadline")
        if isinstance(deadline, (int, float)) and time.time() >= deadline:
            await self._exceeded(scope, kind, name, "deadline", time.time(), 0, deadline)
        if kind == "tool":
            if "tool_calls" in limits:
                await self._reserve(scope, kind, name, {"tool_calls": 1.0}, limits)
            return None
        if not any(n in limits for n in _MODEL_LIMITS):
            return None
        model = str(request.get("model") or name)
        prices: Prices | None = None
        if "cost" in limits:
            table = limits.get("prices")
            prices = (
                Prices({m: ModelPrice(p["input"], p["output"]) for m, p in table.items()})
                if isinstance(table, dict)
                else load_prices()
            )
            if model not in prices.table:
                await self._exceeded(scope, kind, name, "cost", 0, 0, limits["cost"], model=model)
        max_tokens = request.get("max_tokens")
        estimate = float(max_tokens) if isinstance(max_tokens, int) and "tokens" in limits else 0.0
        amounts = {"model_calls": 1.0, "tokens": estimate, "cost": 0.0}
        await self._reserve(scope, kind, name, amounts, limits)
        return _Ticket(scope.run_id, estimate, model, prices)

    async def after(self, ticket: _Ticket, response: Mapping[str, Any] | None) -> None:
        """Settle a model call: its actual tokens and cost replace the estimate."""
        usage = response.get("usage") if response is not None else None
        n_in = n_out = 0
        if isinstance(usage, Mapping):
            n_in = _int(usage.get("input_tokens"))
            n_out = _int(usage.get("output_tokens"))
        deltas = {"tokens": n_in + n_out - ticket.estimate}
        if ticket.prices is not None:
            price = ticket.prices.table[ticket.model]
            deltas["cost"] = (n_in * price.input + n_out * price.output) / 1e6
        if any(deltas.values()):
            await self._store.reserve(ticket.run_id, deltas, {})

    async def _reserve(
        self,
        scope: Scope,
        kind: CallKind,
        name: str,
        amounts: dict[str, float],
        limits: Mapping[str, Any],
    ) -> None:
        wanted = {n: float(limits[n]) for n in amounts if n in limits}
        got = await self._store.reserve(scope.run_id, amounts, wanted)
        if not got.granted:
            over = got.over or "?"
            await self._exceeded(
                scope,
                kind,
                name,
                over,
                got.spent.get(over, 0.0),
                amounts.get(over, 0.0),
                wanted[over],
            )

    async def _exceeded(
        self,
        scope: Scope,
        kind: CallKind,
        name: str,
        limit: str,
        spent: float,
        attempted: float,
        allowed: float,
        model: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "limit": limit,
            "spent": spent,
            "attempted": attempted,
            "allowed": allowed,
            "call": f"{kind}:{name}",
            "agent": scope.agent,
            "event_id": scope.causation_id,
        }
        if model is not None:
            fields["unpriced_model"] = model
        self._record(JournalEntry(scope.run_id, record(BUDGET_EXCEEDED, **fields)))
        info = await self._store.get_run(scope.run_id)
        if info is not None and info.status != BUDGET_EXCEEDED:
            info.status = BUDGET_EXCEEDED
            await self._store.save_run(info)
        if model is not None:
            message = f"model {model!r} has no price, so the run's cost limit cannot be kept"
        elif limit == "deadline":
            message = "the run's deadline has passed"
        else:
            message = (
                f"{limit} limit {allowed:g} reached: spent {spent:g}, this call needs {attempted:g}"
            )
        raise BudgetExceeded(
            message, limit=limit, spent=spent, attempted=attempted, allowed=allowed
        )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
