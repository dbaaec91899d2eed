"""compose.yaml cannot be run here (no Docker); check it is valid and runs what the tests run."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _agentbus_command(service: dict) -> list[list[str]]:
    """The `agentbus ...` commands inside a service's `sh -c` command."""
    command = service["command"]
    assert command[:2] == ["sh", "-c"]
    steps = [shlex.split(part.strip()) for part in command[2].split("&&")]
    return [step[step.index("agentbus") :] for step in steps if "agentbus" in step]


def test_compose_file_is_valid_and_matches_the_tested_commands() -> None:
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = spec["services"]
    assert set(services) >= {"redis", "postgres", "jaeger", "worker", "driver"}
    redis = services["redis"]
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    env = services["worker"]["environment"]
    assert env["AGENTBUS_URL"] == "redis://redis:6379/0"
    pg = services["postgres"]["environment"]
    user, password, db = pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]
    assert env["AGENTBUS_JOURNAL_URL"] == f"postgresql://{user}:{password}@postgres:5432/{db}"
    assert services["worker"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The same commands as tests/cli/test_cli.py::test_topics_and_worker_on_redis,
    # tests/integration/test_multiprocess.py and test_archive_readers.py run against a
    # real Redis and PostgreSQL.
    assert _agentbus_command(services["worker"]) == [
        ["agentbus", "db", "upgrade"],
        ["agentbus", "worker", "examples.support_desk:app", "--archive-after", "1h"],
    ]
    assert _agentbus_command(services["driver"]) == [
        ["agentbus", "run", "examples/support_desk.py", "--no-agents"],
        ["agentbus", "runs"],
    ]
    for target in ("examples/support_desk.py",):
        assert (ROOT / target).is_file()
