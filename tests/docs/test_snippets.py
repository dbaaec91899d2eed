"""Every code block a user may copy from README.md and docs/ runs here.

A fenced ``python`` block runs as a script of its own (``agentbus run`` when it defines an
``@app.main``, else ``python``). ``<!-- file: NAME.py -->`` before a block appends it to
NAME.py instead, so a tutorial can build one app over several blocks; each step must still
run. A ``bash`` block's commands run one by one in the doc's scratch folder against an
embedded journal there: ``RUN``, ``RUN_ID`` and ``<run id>`` stand for the id the last
``agentbus run`` printed, and a ``pip install`` step is skipped (this is that install).
``export NAME=VALUE`` sets a variable for the block's later commands; the journal
archive's (``AGENTBUS_JOURNAL_URL``) is pointed at a schema of the test's own on the test
PostgreSQL, dropped after it.
A block that cannot run says why in ``<!-- not-run: reason -->`` before its fence; a block
neither run nor marked fails the test.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentbus.testing import unique_prefix

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
CHECKED = {"python", "py", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(\S*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*(not-run|file):\s*(.*?)\s*-->$")
PLACEHOLDER = re.compile(r"\bRUN_ID\b|\bRUN\b")


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    directive: str | None = None
    argument: str = ""

    @property
    def where(self) -> str:
        doc = self.doc.relative_to(ROOT) if self.doc.is_relative_to(ROOT) else self.doc.name
        return f"{doc}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc`` with the directive written just before each."""
    out: list[Block] = []
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start, lang = i, match.group(1).lower()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        block = Block(doc, start + 1, lang, "\n".join(lines[start + 1 : end]) + "\n")
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        directive = DIRECTIVE.match(before.strip())
        if directive is not None:
            block.directive, block.argument = directive.group(1), directive.group(2)
        out.append(block)
        i = end + 1
    return out


class Scratch:
    """One doc's folder: its scripts, an embedded journal, the last run id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "examples").symlink_to(ROOT / "examples")
        #: The test PostgreSQL's URL (set by the test; only a doc with an archive needs it).
        self.postgres: Callable[[], str] = _no_postgres
        self.env = {
            **os.environ,
            "AGENTBUS_URL": f"memory://?journal={path / 'journal.sqlite3'}",
            "PYTHONPATH": str(ROOT),
            "NO_COLOR": "1",
        }
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AGENTBUS_MODEL_URL"):
            self.env.pop(name, None)  # the docs' code runs offline
        self.run_id: str | None = None
        self.started: set[str] = set()
        self.archive_schema: str | None = None

    def export(self, assignment: str, where: str) -> None:
        name, _, value = assignment.partition("=")
        if name == "AGENTBUS_JOURNAL_URL":
            assert value.startswith("postgresql://"), f"{where}: {value!r}"
            base = self.postgres()
            self.archive_schema = "t_docs_" + unique_prefix("d").strip(":").split(":")[-1].lower()
            value = f"{base}?schema={self.archive_schema}"
        self.env[name] = value

    def drop_archive(self) -> None:
        if self.archive_schema is None:
            return
        import asyncio

        import asyncpg

        async def drop(schema: str) -> None:
            conn = await asyncpg.connect(self.postgres())
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop(self.archive_schema))

    def sh(self, argv: list[str], where: str) -> str:
        # `agentbus` is this interpreter's, whichever one PATH would find.
        real = [sys.executable, "-m", "agentbus", *argv[1:]] if argv[0] == "agentbus" else argv
        done = subprocess.run(
            real, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (
            f"{where}: `{shlex.join(argv)}` exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        # A warning (a coroutine never awaited, say) is a bug a user would copy.
        assert "Warning" not in done.stderr, f"{where}: `{shlex.join(argv)}` warned\n{done.stderr}"
        found = re.search(r"run id: (\S+)", done.stdout)
        if argv[:2] == ["agentbus", "run"] and found:
            self.run_id = found.group(1)
            self.started.add(argv[2])
        return done.stdout

    def python(self, block: Block, index: int) -> None:
        name = block.argument or f"snippet_{index}.py"
        script = self.path / name
        with script.open("a") as f:
            f.write(block.code)
        if block.argument:  # a step of a longer script: it must import and define cleanly
            self.sh([sys.executable, name], block.where)
        elif "@app.main" in block.code:
            self.sh(["agentbus", "run", name], block.where)
        else:
            self.sh([sys.executable, name], block.where)

    def bash(self, block: Block) -> None:
        for command in commands(block.code.replace("<run id>", "RUN_ID")):
            if command[:2] == ["pip", "install"]:
                continue
            if command[0] == "export":
                for assignment in command[1:]:
                    self.export(assignment, block.where)
                continue
            assert command[0] == "agentbus", (
                f"{block.where}: `{shlex.join(command)}` is not an agentbus command; "
                "mark the block <!-- not-run: reason -->"
            )
            if any(PLACEHOLDER.search(arg) for arg in command):
                assert self.run_id, f"{block.where}: a run id is needed before {command}"
                command = [PLACEHOLDER.sub(self.run_id, arg) for arg in command]
            self.sh(command, block.where)

    def finish(self) -> None:
        # A tutorial's app that no shell block started is run here, so that it runs at all.
        for script in sorted(self.path.glob("*.py")):
            if script.name in self.started or script.name.startswith("snippet_"):
                continue  # run already, or (a snippet) run as it was written
            if "@app.main" in script.read_text():
                self.sh(["agentbus", "run", script.name], script.name)


def _no_postgres() -> str:
    raise AssertionError("this scratch folder has no PostgreSQL")


def commands(code: str) -> list[list[str]]:
    """The commands of a shell block: continuations joined, comments and ``&&`` split."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            out.append(words[:cut])
            words = words[cut + 1 :]
    return [c for c in out if c]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_code_block_runs_or_says_why_not(
    doc: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    scratch = Scratch(tmp_path)
    # The test PostgreSQL, asked for only by a doc that exports AGENTBUS_JOURNAL_URL
    # (the fixture skips, or fails under CI, when it does not answer).
    scratch.postgres = lambda: str(request.getfixturevalue("postgres_url"))
    try:
        for index, block in enumerate(blocks(doc)):
            if block.lang not in CHECKED:
                continue
            if block.directive == "not-run":
                assert block.argument, f"{block.where}: <!-- not-run: --> needs a reason"
                continue
            if block.lang in ("python", "py"):
                scratch.python(block, index)
            else:
                scratch.bash(block)
        scratch.finish()
    finally:
        scratch.drop_archive()


def test_blocks_are_found_with_their_directives(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# t\n\n<!-- not-run: a fragment -->\n```python\nx(\n```\n\n"
        "<!-- file: app.py -->\n\n```python\nA = 1\n```\n\n```mermaid\ngraph\n```\n"
    )
    found = blocks(doc)
    assert [(b.lang, b.directive, b.argument) for b in found] == [
        ("python", "not-run", "a fragment"),
        ("python", "file", "app.py"),
        ("mermaid", None, ""),
    ]
    assert commands("pip install x && agentbus run a.py  # go\nagentbus \\\n  runs\n") == [
        ["pip", "install", "x"],
        ["agentbus", "run", "a.py"],
        ["agentbus", "runs"],
    ]


def test_an_unmarked_failing_block_fails(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("```python\nraise SystemExit(3)\n```\n")
    (tmp_path / "s").mkdir()
    with pytest.raises(AssertionError, match="exited 3"):
        Scratch(tmp_path / "s").python(blocks(doc)[0], 0)


def test_a_block_that_warns_fails(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("```python\nasync def f() -> None: ...\n\nf()\n```\n")
    (tmp_path / "s").mkdir()
    with pytest.raises(AssertionError, match="never awaited"):
        Scratch(tmp_path / "s").python(blocks(doc)[0], 0)


def test_an_unmarked_shell_block_that_is_not_agentbus_fails(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("```bash\ndocker run redis\n```\n")
    (tmp_path / "s").mkdir()
    with pytest.raises(AssertionError, match="not an agentbus command"):
        Scratch(tmp_path / "s").bash(blocks(doc)[0])
