"""The curated public API: ``agentbus.__all__`` is sorted, resolves and is complete."""

from __future__ import annotations

import importlib
import inspect

import pytest

import agentbus
import agentbus.errors
import agentbus.testing
import agentbus.transports

#: Modules whose public names users reach through ``import agentbus``.
CORE_MODULES = [
    "agentbus._bus",
    "agentbus._hooks",
    "agentbus._settings",
    "agentbus.agent",
    "agentbus.app",
    "agentbus.budget",
    "agentbus.clock",
    "agentbus.context",
    "agentbus.envelope",
    "agentbus.errors",
    "agentbus.journal",
    "agentbus.keys",
    "agentbus.message",
    "agentbus.partitions",
    "agentbus.retention",
    "agentbus.runs",
    "agentbus.runtime",
    "agentbus.schema",
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
    "JournalArchive",
    "JournalEntry",
    "JournalStore",
    "Metrics",
    "NullTracer",
    "PartitionTable",
    "RECORD_KINDS",
    "RUN_INDEX_BUCKETS",
    "Reservation",
    "VERSION_ATTRIBUTE",
    "entry_id_key",
    "assign",
    "fold_partitions",
    "parse_duration",
    "partition_key",
    "record",
    "redact_url",
    "resolve_journal_url",
    "resolve_url",
    "split_stream",
    "upcast",
    "upcasters",
    "validate_payload",
    "version_of",
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


def _agentbus_types(annotation: object) -> set[type]:
    """The agentbus classes an annotation names (inside unions and generics too)."""
    import typing

    found: set[type] = set()
    if inspect.isclass(annotation) and annotation.__module__.startswith("agentbus"):
        found.add(annotation)
    for arg in typing.get_args(annotation):
        found |= _agentbus_types(arg)
    origin = typing.get_origin(annotation)
    if origin is not None and origin is not annotation:
        found |= _agentbus_types(origin)
    return found


@pytest.mark.parametrize(
    "target",
    [
        agentbus.Tracer,
        agentbus.MetricsSink,
        agentbus.Bus,
        agentbus.Context,
        agentbus.current_scope,
        agentbus.Transport,
    ],
    ids=lambda t: t.__name__,
)
def test_what_an_implementer_needs_is_exported(target: object) -> None:
    """Implementing (or calling) an export needs no import from a private module."""
    import typing

    members = (
        [m for _, m in inspect.getmembers(target, inspect.isfunction)]
        if inspect.isclass(target)
        else [target]
    )
    hints = [typing.get_type_hints(target)] if inspect.isclass(target) else []
    for member in members:
        try:
            hints.append(typing.get_type_hints(member))
        except NameError:  # a name only imported for type checking elsewhere
            continue
    needed = set().union(*(_agentbus_types(t) for h in hints for t in h.values()))
    reachable = {getattr(agentbus, n) for n in agentbus.__all__} | {
        getattr(agentbus.transports, n) for n in agentbus.transports.__all__
    }
    missing = sorted(c.__name__ for c in needed - reachable)
    assert missing == [], f"export these: {missing}"
