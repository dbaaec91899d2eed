"""The curated public API: ``agentbus.__all__`` is sorted, resolves and is complete."""

from __future__ import annotations

import importlib
import inspect

import pytest

import agentbus
import agentbus.errors
import agentbus.testing

#: Modules whose public names users reach through ``import agentbus``.
CORE_MODULES = [
    "agentbus.agent",
    "agentbus.app",
    "agentbus.clock",
    "agentbus.context",
    "agentbus.envelope",
    "agentbus.errors",
    "agentbus.journal",
    "agentbus.keys",
    "agentbus.message",
    "agentbus.retention",
    "agentbus.runs",
    "agentbus.runtime",
    "agentbus.transports",
    "agentbus.transports.base",
    "agentbus.transports.contract",
    "agentbus.transports.memory",
]

#: Public in their module but deliberately not top-level: plumbing for transport
#: authors and internals, reachable as ``agentbus.<module>.<name>``.
NOT_TOP_LEVEL = {
    "Ack",
    "Admin",
    "Broker",
    "DEFAULT_JOURNAL_PATH",
    "DEFAULT_PREFIX",
    "Delivery",
    "EXTENSIONS",
    "EntryState",
    "GroupInfo",
    "JournalEntry",
    "JournalStore",
    "RECORD_KINDS",
    "Scope",
    "entry_id_key",
    "parse_duration",
    "record",
    "redact_url",
    "resolve_url",
}


def _isort_key(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions.
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_unique() -> None:
    for names in (agentbus.__all__, agentbus.testing.__all__):
        assert names == sorted(names, key=_isort_key)
        assert len(set(names)) == len(names)


def test_every_export_resolves() -> None:
    for name in agentbus.__all__:
        assert hasattr(agentbus, name), name
    for name in agentbus.testing.__all__:
        assert hasattr(agentbus.testing, name), name


@pytest.mark.parametrize("module_name", CORE_MODULES)
def test_core_modules_are_exported(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module_name} has no __all__"
    missing = sorted(set(names) - set(agentbus.__all__) - NOT_TOP_LEVEL)
    assert missing == [], f"export these from agentbus (or list them in NOT_TOP_LEVEL): {missing}"
    for name in names:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name!r}"


def test_exports_are_the_defining_objects() -> None:
    for name in agentbus.__all__:
        obj = getattr(agentbus, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            home = importlib.import_module(obj.__module__)
            assert getattr(home, obj.__name__) is obj, name


def test_every_error_is_exported_under_the_root() -> None:
    errors = [
        obj
        for obj in vars(agentbus.errors).values()
        if inspect.isclass(obj) and issubclass(obj, Exception)
    ]
    assert errors
    for cls in errors:
        assert issubclass(cls, agentbus.AgentBusError), cls
        assert cls.__name__ in agentbus.__all__, cls
    assert issubclass(agentbus.RequestTimeout, TimeoutError)
    assert issubclass(agentbus.TransportUnavailable, ConnectionError)


def test_public_classes_and_functions_are_documented() -> None:
    undocumented = [
        name
        for name in agentbus.__all__ + [f"testing.{n}" for n in agentbus.testing.__all__]
        if (obj := _resolve(name)) is not None
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and not (obj.__doc__ or "").strip()
    ]
    assert undocumented == []


def _resolve(name: str) -> object:
    owner, _, attr = name.rpartition(".")
    return getattr(agentbus.testing if owner else agentbus, attr)


def test_version() -> None:
    assert isinstance(agentbus.__version__, str)
    assert agentbus.__version__.count(".") >= 2
