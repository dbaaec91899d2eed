"""The public surface of ``agents``: complete exports, dependency boundaries, import cost."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

from agentbus import agents

PACKAGE = Path(agents.__file__).parent
SUBMODULES = [
    "agentbus.agents.call",
    "agentbus.agents.env",
    "agentbus.agents.errors",
    "agentbus.agents.llm",
    "agentbus.agents.model",
    "agentbus.agents.offline",
    "agentbus.agents.openai_model",
    "agentbus.agents.tools",
]


def _isort_key(name: str) -> tuple[int, str]:
    # The order ruff (RUF022) keeps: CONSTANTS, then Classes, then functions.
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


def test_all_is_sorted_and_resolvable() -> None:
    assert agents.__all__ == sorted(agents.__all__, key=_isort_key)
    for name in agents.__all__:
        assert getattr(agents, name) is not None
    assert set(agents.__all__) <= set(dir(agents))


def test_every_public_name_of_the_submodules_is_exported() -> None:
    exported = set(agents.__all__)
    for module_name in SUBMODULES:
        module = importlib.import_module(module_name)
        # Constants such as DEFAULT_MODEL and Role stay in their module on purpose.
        public = {name for name in module.__all__ if name not in ("DEFAULT_MODEL", "Role")}
        assert public <= exported, f"{module_name} exports {public - exported} not in agents"


def test_only_the_openai_client_modules_import_openai_or_httpx() -> None:
    for path in PACKAGE.glob("*.py"):
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
        forbidden = imported & {"openai", "httpx", "redis"}
        if path.name in ("openai_model.py", "_openai_request.py", "_openai_retry.py"):
            forbidden.discard("openai")
            forbidden.discard("httpx")
        assert not forbidden, f"{path.name} imports {sorted(forbidden)}"


def test_importing_agents_loads_neither_redis_nor_the_openai_sdk() -> None:
    code = (
        "import sys, agentbus.agents; "
        "print(sorted(m for m in ('redis', 'openai', 'httpx') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    loaded = result.stdout.strip()
    assert "redis" not in loaded
    assert "openai" not in loaded
