"""Under ``CI=true`` a missing Redis fails the Redis tests instead of skipping them.

The check runs the real fixtures of ``tests/conftest.py`` in a child pytest against a
port where nothing listens, once with ``CI=true`` and once without.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
NOWHERE = "redis://127.0.0.1:1/0"


def run_child(tmp_path: Path, *, ci: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(
        "def test_needs_redis(redis_url):\n    assert redis_url\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["AGENTBUS_TEST_REDIS_URL"] = NOWHERE
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # faster; the probe needs no plugins
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", "-rfs"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("ci", [True, False])
def test_missing_redis_fails_under_ci_and_skips_otherwise(tmp_path: Path, ci: bool) -> None:
    child = run_child(tmp_path, ci=ci)
    output = child.stdout + child.stderr

    if ci:
        assert child.returncode == 1, output
        assert "1 error" in output  # pytest.fail in a fixture is an error, not a skip
        assert f"Redis is required under CI=true but does not answer at {NOWHERE}" in output
        assert "skipped" not in output
        assert "Failed: Redis is required" in output
    else:
        assert child.returncode == 0, output
        assert "1 skipped" in output
        assert f"no Redis at {NOWHERE}" in output
