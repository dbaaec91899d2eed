"""The documentation site builds with ``mkdocs build --strict`` and documents what users need."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import griffe
import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The types users get back from a run or return from their callbacks: every field documented.
RESULT_TYPES = [
    "agents.llm.LLMResult",
    "agents.llm.Reply",
    "agentbus.patterns.market._messages.MarketTask",
    "agentbus.patterns.market._messages.AuctionResult",
    "agentbus.patterns.market._messages.Attempt",
    "agentbus.patterns.market._messages.MarketOutcome",
    "agentbus.patterns.market._ledger.Ledger",
    "agentbus.patterns.market._bidder.Quote",
    "agentbus.patterns.market._bidder.Decline",
    "patterns.common._messages.Task",
    "patterns.common._messages.TaskResult",
    "patterns.common._messages.TaskFailure",
    "patterns.common._messages.JobResult",
    "patterns.common._messages.Summary",
    "agentbus.patterns.blackboard._board.Draft",
    "agentbus.patterns.blackboard._board.RoundRecord",
    "agentbus.patterns.blackboard._board.BoardOutcome",
    "agentbus.patterns.blackboard._board.SolveBoard",
    "agentbus.patterns.market._messages.MarketJob",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "WARNING" not in output, output
    return out


@pytest.mark.parametrize(
    ("page", "anchor"),
    [
        ("reference/patterns/index.html", "agentbus.patterns.market.AuctionResult.task_id"),
        ("reference/patterns/index.html", "agentbus.patterns.market.Bidder"),
        ("reference/patterns/index.html", "agentbus.patterns.market.MarketTask"),
        ("reference/patterns/index.html", "agentbus.patterns.blackboard.Verdict"),
        ("reference/patterns/index.html", "agentbus.patterns.orchestrator_worker.WorkOutput"),
        ("reference/patterns/index.html", "agentbus.patterns.orchestrator_worker.Task"),
        ("reference/agentbus/index.html", "agentbus.Journal.open"),
        ("reference/agentbus/index.html", "agentbus.Runtime"),
        ("reference/agentbus/index.html", "agentbus.Runtime.publish"),
        ("reference/agentbus/index.html", "agentbus.Runtime.request"),
        ("reference/agents/index.html", "agentbus.agents.LLMAgent"),
        ("reference/agents/index.html", "agentbus.agents.Reply.offline"),
        ("tutorial/index.html", "7-give-the-reporter-a-model-and-a-tool"),
    ],
)
def test_the_site_builds_strictly_and_documents(site: Path, page: str, anchor: str) -> None:
    assert f'id="{anchor}"' in (site / page).read_text()


def test_bidders_constructor_arguments_are_documented(site: Path) -> None:
    page = (site / "reference/patterns/index.html").read_text()
    start = page.index('id="agentbus.patterns.market.Bidder"')
    assert "the market to bid in" in page[start : start + 20_000]


@pytest.mark.parametrize("path", RESULT_TYPES)
def test_every_field_of_a_result_type_is_documented(path: str) -> None:
    module, name = path.rsplit(".", 1)
    cls = griffe.load(module, search_paths=[str(ROOT)])[name]
    fields = [
        m
        for m in cls.members.values()
        if m.is_attribute and not m.name.startswith("_") and m.name != "model_config"
    ]
    assert fields, path
    undocumented = [f.name for f in fields if not (f.docstring and f.docstring.value.strip())]
    assert undocumented == [], f"{path}: document {undocumented}"
