"""agentbus installs next to the OpenAI Agents SDK (`openai-agents`, import name `agents`).

Our agent kinds and coordinators are ``agentbus.agents`` and ``agentbus.patterns`` (the
folders ``agents/`` and ``patterns/`` at the top of the repo, linked under ``agentbus/``):
nothing of ours is installed as a top-level ``agents`` or ``patterns``. ``openai-agents`` is
a dev dependency, so this runs in the environment the README's install command builds.
The check runs in a subprocess started outside the repository: from inside it, the folder
``agents/`` itself would be importable as ``agents`` (the current directory is on sys.path).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, agents, agentbus.agents, agentbus.patterns
from agents import Agent as SdkAgent, Runner
from agentbus.agents import LLMAgent
from agentbus.patterns.market import Auctioneer
print(json.dumps({
    "sdk": agents.__file__,
    "ours": agentbus.agents.__file__,
    "patterns": agentbus.patterns.__file__,
    "sdk_agent": SdkAgent.__module__,
    "runner": Runner.__module__,
    "llm_agent": LLMAgent.__module__,
    "auctioneer": Auctioneer.__module__,
}))
"""


def test_openai_agents_and_agentbus_import_side_by_side(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    sdk = Path(found["sdk"]).resolve()
    assert sdk != (ROOT / "agents" / "__init__.py").resolve(), "`agents` is ours, not the SDK's"
    assert "site-packages" in sdk.parts, sdk
    assert found["sdk_agent"].startswith("agents")
    assert ROOT in Path(found["ours"]).resolve().parents
    assert found["llm_agent"] == "agentbus.agents.llm"
    assert found["auctioneer"].startswith("agentbus.patterns.market")


def test_the_distribution_installs_no_top_level_agents_or_patterns() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["name"] == "agentbus-streams"
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["agentbus*"]
    for folder in ("agents", "patterns"):
        link = ROOT / "agentbus" / folder
        assert link.is_symlink(), link
        assert link.resolve() == (ROOT / folder).resolve()
