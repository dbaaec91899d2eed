"""What :mod:`agentbus.testing.redis_cluster` and :mod:`~agentbus.testing.redis_sentinel` share.

Groups of :class:`~agentbus.testing.redis_server.RedisServer` nodes under one directory,
and ``redis-cli`` calls (no redis-py in test helpers: they must not depend on the client
they test).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .redis_server import RedisServer, free_port

__all__ = ["cli", "cluster_ports", "info"]

HOST = "127.0.0.1"
# A cluster node also listens on port + 10000 (the cluster bus), so ports stop below this.
_BUS_OFFSET = 10000
_MAX_PORT = 65536 - _BUS_OFFSET


# Replicas sync at once (the default waits 5 s for more replicas to share a diskless sync).
DATA_CONFIG = ("repl-diskless-sync-delay 0",)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """``count`` distinct free ports below 55536 whose cluster-bus port (+10000) is free too."""
    ports: list[int] = []
    for _ in range(10_000):
        if len(ports) == count:
            return ports
        port = free_port()
        if port < _MAX_PORT and port not in ports and _bindable(port + _BUS_OFFSET):
            ports.append(port)
    raise RuntimeError(f"found only {len(ports)} of {count} free cluster port pairs")


def cli(port: int, *args: str, timeout: float = 5.0) -> str:
    """``redis-cli -p PORT ARGS...`` on 127.0.0.1: its output ('' when it cannot connect)."""
    try:
        done = subprocess.run(
            ["redis-cli", "-h", HOST, "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout


def info(port: int, section: str) -> dict[str, str]:
    """``INFO section`` (or ``CLUSTER INFO`` for ``"cluster-info"``) as a dict; {} when down."""
    args = ("cluster", "info") if section == "cluster-info" else ("info", section)
    out: dict[str, str] = {}
    for line in cli(port, *args).splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            out[key] = value
    return out


def poll(check: Callable[[], bool], timeout: float) -> bool:
    """Whether ``check`` became true within ``timeout`` seconds (polled every 50 ms)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait(check: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]) -> None:
    """Poll ``check`` until true; on timeout raise ``TimeoutError`` with ``logs()`` attached."""
    if not poll(check, timeout):
        raise TimeoutError(f"{what} not reached within {timeout}s\n{logs()}")


class NodeGroup:
    """``RedisServer`` nodes, one directory each under a shared one: start, kill, stop, logs."""

    def __init__(self, directory: str | Path | None, label: str) -> None:
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix=f"agentbus-{label}-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.nodes: dict[int, RedisServer] = {}
        self._stopped = False

    def _node(self, port: int, config: Iterable[str], args: Iterable[str] = ()) -> RedisServer:
        node = RedisServer(
            directory=self.directory / f"node-{port}",
            port=port,
            config=list(config),
            args=list(args),
        )
        self.nodes[port] = node
        return node

    def _running(self) -> list[int]:
        return [p for p, n in self.nodes.items() if n.running]

    def logs(self, lines: int = 20) -> str:
        """The last ``lines`` of every node's log, for error messages."""
        parts = []
        for port, node in self.nodes.items():
            tail = node._log_since(0).splitlines()[-lines:]
            parts.append(f"--- {port} ({node.directory}) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def kill(self, port: int) -> None:
        """SIGKILL one node (a crash); ``restart(port)`` brings it back on the same port."""
        self.nodes[port].kill()

    def restart(self, port: int, timeout: float = 15.0) -> None:
        """Start a stopped or killed node again, with its directory (and cluster config)."""
        self.nodes[port].start(timeout)

    def stop(self, *, keep_directory: bool = False) -> None:
        """Kill every process (idempotent); remove the directory unless given or ``keep_directory``."""
        for node in self.nodes.values():
            node.kill()
        if self._own_dir and not keep_directory and not self._stopped:
            shutil.rmtree(self.directory, ignore_errors=True)
        self._stopped = True

    def _start_all(self, timeout: float, ports: Iterable[int] | None = None) -> None:
        try:
            for port in self.nodes if ports is None else ports:
                self.nodes[port].start(timeout)
        except BaseException:
            self.stop(keep_directory=True)
            raise

    def _exit(self, exc: BaseException | None) -> None:
        keep = exc is not None and self._own_dir
        if keep and exc is not None:
            exc.add_note(f"redis logs kept in {self.directory}")
        self.stop(keep_directory=keep)
