"""``agentbus`` subprocesses for multi-process, crash and CLI tests (public test helpers).

::

    with WorkerProcesses("redis://127.0.0.1:6379/0?prefix=t:", "myapp.py:app") as workers:
        workers.start(consumer="w1")
        victim = workers.start(consumer="w2", extra=("--visibility-timeout", "1"))
        ...
        workers.kill("w2")          # SIGKILL, as a crash would

Each worker's output is drained into :attr:`WorkerProcesses.output` (a chatty worker never
blocks on a full pipe). Leaving the block stops the survivors with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType

__all__ = ["WorkerProcesses", "run_cli"]


def run_cli(
    *args: str,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``agentbus ARGS`` in a subprocess (this interpreter), as a user would.

    ``env`` is added to the current environment. Returns the finished process with its
    text output; raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds.
    """
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


class WorkerProcesses:
    """Starts ``agentbus worker APP --url URL`` processes and makes sure they all end."""

    def __init__(self, url: str, app: str) -> None:
        self.url = url
        self.app = app
        self.output: list[str] = []
        self._procs: list[subprocess.Popen[str]] = []
        self._live: dict[str, subprocess.Popen[str]] = {}
        self._drains: list[threading.Thread] = []

    def start(
        self,
        *,
        consumer: str | None = None,
        app: str | None = None,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        """Start a worker and wait until it announces that it is reading.

        Raises ``AssertionError`` with the worker's first line when it does not start.
        """
        command = [sys.executable, "-m", "agentbus", "worker", app or self.app, "--url", self.url]
        if consumer is not None:
            command += ["--consumer", consumer]
        proc = subprocess.Popen(
            [*command, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self._procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "hosting" in line, f"worker did not start: {line!r}"
        if consumer is not None:
            self._live[consumer] = proc
        drain = threading.Thread(target=lambda: self.output.extend(proc.stdout or ()), daemon=True)
        drain.start()
        self._drains.append(drain)
        return proc

    def kill(self, consumer: str) -> None:
        """SIGKILL the worker started as ``consumer`` (no shutdown, no acks)."""
        proc = self._live.pop(consumer)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        """SIGTERM every worker still running (SIGKILL after 15 s) and close the pipes."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for drain in self._drains:
            drain.join(timeout=5)  # EOF once the process is gone
        for proc in self._procs:
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> WorkerProcesses:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
