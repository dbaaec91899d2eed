"""A throwaway ``redis-server`` for tests: free loopback port, temp dir, stop/kill/restart.

Tests that restart, crash, lock down or encrypt Redis cannot use a shared server, so
they start their own::

    with RedisServer(appendonly=True, appendfsync="always") as server:
        async with Runtime(server.url + "?prefix=t:") as rt:
            ...
            server.kill()      # SIGKILL: a crash; AOF with ``always`` keeps every reply
            server.start()     # same port, same directory: the data is reloaded

ACL users (``users=["alice on >pw ~app:* +@all"]``), a default-user password
(``password=``) and TLS (``tls=make_test_certificates(dir)``) are options. Nothing here
talks to Redis with redis-py; readiness is read from the server's log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

__all__ = ["RedisServer", "TlsFiles", "free_port", "make_test_certificates"]

_READY = "Ready to accept connections"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a test CA, a server certificate it signed, and a client one."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_test_certificates(directory: str | Path, *, name: str = "ca") -> TlsFiles:
    """Create a CA and a server (127.0.0.1, localhost) and client certificate it signed.

    ``name`` prefixes the CA files, so two unrelated CAs can live in one directory.
    Raises ``RuntimeError`` when the ``openssl`` command is missing.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = f"{name}.key", f"{name}.crt"
    # The extensions strict X.509 verification demands (Python 3.13 turns it on by
    # default): a CA marked as one, with key usage; leaves naming their issuer and use.
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN=agentbus test {name}", "-keyout", ca_key, "-out", ca_cert,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash", cwd=d)  # fmt: skip
    for role in ("server", "client"):
        key, csr, crt = f"{name}-{role}.key", f"{name}-{role}.csr", f"{name}-{role}.crt"
        ext = d / f"{name}-{role}.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={'serverAuth' if role == 'server' else 'clientAuth'}\n"
            "authorityKeyIdentifier=keyid,issuer\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        )
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                 "-keyout", key, "-out", csr, cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
                 "-CAcreateserial", "-days", "2", "-out", crt, "-extfile", ext.name, cwd=d)  # fmt: skip
    return TlsFiles(
        ca_cert=d / ca_cert,
        server_cert=d / f"{name}-server.crt",
        server_key=d / f"{name}-server.key",
        client_cert=d / f"{name}-client.crt",
        client_key=d / f"{name}-client.key",
    )


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 with its own directory.

    ``appendonly``/``appendfsync`` set persistence (no RDB snapshots either way);
    ``password`` protects the default user; ``users`` are ACL ``user`` rules;
    ``tls`` serves TLS only (clients need not present a certificate unless
    ``tls_auth_clients``); ``config`` adds raw ``redis.conf`` lines; ``args`` follow the
    config file on the command line (``["--sentinel"]`` runs a Sentinel).
    """

    #: The log line that says the server serves (a Sentinel logs its id instead).
    ready_line = _READY

    def __init__(
        self,
        *,
        directory: str | Path | None = None,
        port: int | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        password: str | None = None,
        users: Sequence[str] = (),
        tls: TlsFiles | None = None,
        tls_auth_clients: bool = False,
        config: Sequence[str] = (),
        executable: str = "redis-server",
        args: Sequence[str] = (),
    ) -> None:
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="agentbus-redis-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.password = password
        self.executable = executable
        self.args = list(args)
        lines = [
            "bind 127.0.0.1",
            f"dir {self.directory}",
            f"logfile {self.directory / 'redis.log'}",
            'save ""',
            f"appendonly {'yes' if appendonly else 'no'}",
            f"appendfsync {appendfsync}",
            "protected-mode no",
        ]
        if tls is None:
            lines.append(f"port {self.port}")
        else:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {tls.server_cert}",
                f"tls-key-file {tls.server_key}",
                f"tls-ca-cert-file {tls.ca_cert}",
                f"tls-auth-clients {'yes' if tls_auth_clients else 'no'}",
            ]
        if password is not None:
            lines.append(f'requirepass "{password}"')
        lines += [f"user {rule}" for rule in users]
        lines += list(config)
        self.config_file = self.directory / "redis.conf"
        self.config_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    # -- addresses ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (``rediss://`` with TLS), with the default password."""
        return self.url_for(None, self.password)

    def url_for(self, user: str | None, password: str | None, db: int = 0) -> str:
        """The URL that logs in as ``user`` (``None``: the default user) with ``password``."""
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if password is not None:
            auth = f"{quote(user or '', safe='')}:{quote(password, safe='')}@"
        elif user is not None:
            auth = f"{quote(user, safe='')}@"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/{db}"

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start (or start again, on the same port and data) and wait until it serves.

        Raises ``RuntimeError`` with the server's log when it does not come up.
        """
        if self.running:
            return self
        log = self.directory / "redis.log"
        offset = log.stat().st_size if log.exists() else 0
        self.proc = subprocess.Popen(
            [self.executable, str(self.config_file), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._log_since(offset)
            if self.ready_line in text:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(
            f"redis-server on port {self.port} did not start: {self._log_since(offset)[-2000:]}"
        )

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.directory / "redis.log", "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down gracefully (SIGTERM: Redis flushes its AOF) and wait."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Crash it (SIGKILL) and wait: only what was fsynced survives."""
        self._signal(signal.SIGKILL, 10.0)

    def restart(self, *, crash: bool = False) -> None:
        """Stop (or kill, with ``crash``) and start again on the same port and directory."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start()

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None

    def wipe(self) -> None:
        """Delete the data files (while stopped): the next start comes up empty."""
        if self.running:
            raise RuntimeError("stop the server before wiping its data")
        for path in self.directory.iterdir():
            if path.name.startswith(("appendonly", "dump")):
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def close(self) -> None:
        """Kill the server and remove the directory if this object created it."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
