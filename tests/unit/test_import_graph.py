"""No import cycles among the project's modules.

Every import counts — top level, under ``if TYPE_CHECKING:`` and inside functions alike: a
type-only or deferred import still ties two modules' designs together. A package's
``__init__`` re-exporting its own children is not a cycle (the child -> own package edge
is dropped), the same rule as ``import_cycles.py`` in the repository's hooks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Folder -> package name: the top-level folders agents/ and patterns/ are the packages
#: agentbus.agents and agentbus.patterns (agentbus/agents and agentbus/patterns link to them).
PACKAGES = {"agentbus": "agentbus", "agents": "agentbus.agents", "patterns": "agentbus.patterns"}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT / folder)
            if folder == "agentbus" and relative.parts[0] in ("agents", "patterns"):
                continue  # the links: found under their own folders
            parts = [package, *relative.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    resolved = set()
    for target in found:
        while target and target not in mods:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (any way at all)."""
    mods = _modules()
    graph = {name: _imports(name, path, mods) for name, path in mods.items()}
    packages = {name for name, path in mods.items() if path.name == "__init__.py"}
    return {
        name: {
            d
            for d in deps
            if not (d in packages and name.startswith(d + ".") and _root(d) == _root(name))
        }
        for name, deps in graph.items()
    }


def _root(module: str) -> str:
    """The package of the folder ``module`` lives in (agentbus.agents, not agentbus)."""
    return max((p for p in PACKAGES.values() if module == p or module.startswith(p + ".")), key=len)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _cycles_touching(package: str) -> list[list[str]]:
    return [
        c
        for c in cycles(import_graph())
        if any(m == package or m.startswith(package + ".") for m in c)
    ]


def test_the_checker_sees_every_kind_of_import_and_finds_cycles(tmp_path: Path) -> None:
    source = tmp_path / "one.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.two import Thing\n"
        "def later():\n"
        "    import pkg.three\n"
        "from . import four\n"
    )
    mods = dict.fromkeys(("pkg", "pkg.one", "pkg.two", "pkg.three", "pkg.four"), tmp_path / "x.py")
    assert _imports("pkg.one", source, mods) == {"pkg", "pkg.two", "pkg.three", "pkg.four"}
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    graph = import_graph()
    assert "agentbus" in graph["agentbus.agents.llm"]  # edges across the packages count
    assert "agentbus.patterns.common" in graph["agentbus.patterns.market._bidder"]


@pytest.mark.parametrize("package", ["agentbus.agents", "agentbus.patterns"])
def test_no_import_cycle(package: str) -> None:
    assert _cycles_touching(package) == []


def test_no_import_cycle_in_agentbus() -> None:
    assert _cycles_touching("agentbus") == []


def test_the_runtime_is_imported_by_no_collaborator() -> None:
    """Helpers receive what they use: only the package and the entry points import it."""
    importers = sorted(m for m, deps in import_graph().items() if "agentbus.runtime" in deps)
    assert set(importers) <= {"agentbus", "agentbus.cli", "agentbus.replay", "agentbus.testing"}, (
        importers
    )
