"""The patterns' public names: no two patterns give one name to different types."""

from __future__ import annotations

import importlib
import inspect

import pytest

from agentbus import lookup_type, patterns
from agentbus.patterns.market import MarketTask
from agentbus.patterns.orchestrator_worker import Task

PATTERN_MODULES = [
    "agentbus.patterns.orchestrator_worker",
    "agentbus.patterns.hierarchical",
    "agentbus.patterns.blackboard",
    "agentbus.patterns.market",
    "agentbus.patterns.saga",
]


def test_no_name_means_two_types_across_patterns() -> None:
    owners: dict[str, tuple[str, object]] = {}
    clashes = []
    for module_name in PATTERN_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            first = owners.setdefault(name, (module_name, obj))
            if first[1] is not obj:
                clashes.append(f"{name}: {first[0]} and {module_name}")
    assert clashes == []


def test_top_level_exports_resolve_to_the_pattern_modules_objects() -> None:
    assert patterns.__all__ == sorted(
        patterns.__all__, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)
    )
    modules = [importlib.import_module(m) for m in PATTERN_MODULES]
    for name in patterns.__all__:
        obj = getattr(patterns, name)
        if not inspect.ismodule(obj):
            assert any(getattr(m, name, None) is obj for m in modules), name


def test_the_types_an_application_needs_are_top_level() -> None:
    # The names the docs' snippets import: one per role a user's code plays.
    for name in ["MarketTask", "Task", "TaskResult", "Summary", "Verdict", "Draft", "Quote"]:
        assert name in patterns.__all__, name
    assert patterns.Task is Task
    assert patterns.MarketTask is MarketTask


def test_wire_type_names_stay_stable() -> None:
    # Recorded runs name these types; renaming the Python class must not change them.
    assert lookup_type("patterns.Task") is Task
    assert lookup_type("market.Job").model_fields["tasks"].annotation == list[MarketTask]


def test_the_old_market_task_name_still_imports_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="MarketTask"):
        from agentbus.patterns.market import Task as OldTask
    assert OldTask is MarketTask
    with pytest.raises(AttributeError, match="Nope"):
        patterns.market.Nope  # noqa: B018
