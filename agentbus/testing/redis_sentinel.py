"""A throwaway Sentinel deployment: a master, its replicas and Sentinels, on loopback.

Also importable from :mod:`agentbus.testing.redis_cluster`; see there for an example.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from ._redis_nodes import DATA_CONFIG, HOST, NodeGroup, cli, cluster_ports, info, wait

__all__ = ["SentinelGroup"]


class SentinelGroup(NodeGroup):
    """A master with ``replicas`` replicas watched by ``sentinels`` Sentinels, on 127.0.0.1.

    The quorum is a majority of the Sentinels. ``min_replicas_to_write`` > 0 sets
    ``min-replicas-to-write`` (with ``min-replicas-max-lag``) on every data node, so a
    promoted replica keeps refusing writes it cannot replicate. Ready when every Sentinel
    knows the master, all replicas and the other Sentinels, and every replica is in sync.
    """

    def __init__(
        self,
        replicas: int = 1,
        sentinels: int = 3,
        *,
        service: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 10_000,
        min_replicas_to_write: int = 0,
        min_replicas_max_lag: int = 1,
        directory: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(directory, "sentinel")
        self.service, self.timeout = service, timeout
        self.quorum = sentinels // 2 + 1
        ports = cluster_ports(1 + replicas + sentinels)
        self.data_ports = ports[: 1 + replicas]
        self.sentinel_ports = ports[1 + replicas :]
        self._initial_master = self.data_ports[0]
        data = list(DATA_CONFIG)
        if min_replicas_to_write > 0:
            data += [
                f"min-replicas-to-write {min_replicas_to_write}",
                f"min-replicas-max-lag {min_replicas_max_lag}",
            ]
        for port in self.data_ports:
            replicaof = (
                [] if port == self._initial_master else [f"replicaof {HOST} {self._initial_master}"]
            )
            self._node(port, data + replicaof)
        for port in self.sentinel_ports:
            node = self._node(
                port,
                [
                    f"sentinel monitor {service} {HOST} {self._initial_master} {self.quorum}",
                    f"sentinel down-after-milliseconds {service} {down_after_ms}",
                    f"sentinel failover-timeout {service} {failover_timeout_ms}",
                ],
                ["--sentinel"],
            )
            node.ready_line = "Sentinel ID is"

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> SentinelGroup:
        """Start the data nodes and the Sentinels; wait until all know each other."""
        master = self._initial_master
        self._start_all(self.timeout, self.data_ports)
        try:
            # Sentinels learn the replicas from the master's INFO, which they read only
            # every 10 s: start them once the replicas are attached, so the first read does.
            wait(lambda: self._links_up(master), self.timeout, "replicas in sync", self.logs)
            self._start_all(self.timeout, self.sentinel_ports)
            self.wait_ready(master, self.timeout)
        except BaseException:
            self.stop(keep_directory=True)
            raise
        return self

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)

    # -- addresses ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,.../SERVICE``."""
        seeds = ",".join(f"{HOST}:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{seeds}/{quote(self.service, safe='')}"

    def url_for(self, prefix: str | None = None) -> str:
        """:attr:`url` with ``?prefix=PREFIX`` (the runtime's key prefix) when given."""
        return self.url if prefix is None else f"{self.url}?prefix={quote(prefix, safe='')}"

    def _sentinel_master(self, sentinel: int) -> int | None:
        lines = cli(sentinel, "sentinel", "get-master-addr-by-name", self.service).split()
        return int(lines[1]) if len(lines) == 2 and lines[1].isdigit() else None

    @property
    def master_port(self) -> int:
        """The master's port as the first answering Sentinel reports it."""
        for sentinel in self.sentinel_ports:
            if self.nodes[sentinel].running and (port := self._sentinel_master(sentinel)):
                return port
        raise RuntimeError("no Sentinel reports a master")

    def replica_ports(self) -> list[int]:
        """Running data nodes that say they are replicas."""
        return [p for p in self.data_ports if info(p, "replication").get("role") == "slave"]

    # -- readiness ------------------------------------------------------------------------------
    def _count(self, sentinel: int, what: str, skip: str = "s_down") -> int:
        # SENTINEL REPLICAS/SENTINELS print flat name/value lines per instance; count the
        # instances whose flags carry no trouble.
        lines = cli(sentinel, "sentinel", what, self.service).splitlines()
        flags = [lines[i + 1] for i, v in enumerate(lines[:-1]) if v == "flags"]
        return sum(1 for f in flags if skip not in f and "disconnected" not in f)

    def _links_up(self, master: int) -> bool:
        if info(master, "replication").get("role") != "master":
            return False
        for port in self.data_ports:
            if port == master or not self.nodes[port].running:
                continue
            r = info(port, "replication")
            if r.get("master_port") != str(master) or r.get("master_link_status") != "up":
                return False
        return True

    def _ready(self, master: int) -> bool:
        if not self._links_up(master):
            return False
        replicas = [p for p in self.data_ports if p != master and self.nodes[p].running]
        for sentinel in self.sentinel_ports:
            if not self.nodes[sentinel].running:
                continue
            if self._sentinel_master(sentinel) != master:
                return False
            if self._count(sentinel, "replicas") < len(replicas):
                return False
            running = sum(1 for s in self.sentinel_ports if self.nodes[s].running)
            if self._count(sentinel, "sentinels") < running - 1:
                return False
        return True

    def wait_ready(self, master: int | None = None, timeout: float = 30.0) -> None:
        """Wait until every Sentinel names ``master`` (default: the current one) and knows
        the replicas and the other Sentinels, and every replica's link to it is up."""
        port = master if master is not None else self.master_port
        wait(lambda: self._ready(port), timeout, f"sentinel group on master {port}", self.logs)

    # -- faults ---------------------------------------------------------------------------------
    def failover(self, timeout: float = 30.0, *, demote: bool = False) -> tuple[int, int]:
        """``SENTINEL FAILOVER``; waits until the Sentinels name a new master, it says so,
        and the old master is its replica with the link up. Returns ``(old, new)``.

        The old master keeps accepting writes until the Sentinels demote it, which they do
        only 8-20 s after the promotion (they let the configuration settle first).
        ``demote=True`` sends it the ``REPLICAOF`` they would send at once, for tests that
        need the new topology rather than that window.
        """
        old = self.master_port
        sentinel = next(s for s in self.sentinel_ports if self.nodes[s].running)
        reply = cli(sentinel, "sentinel", "failover", self.service).strip()
        if reply != "OK":
            raise RuntimeError(f"SENTINEL FAILOVER answered {reply!r}")

        def promoted() -> bool:
            port = self._sentinel_master(sentinel)
            return port not in (None, old)

        wait(promoted, timeout, "a new master named by the Sentinels", self.logs)
        new = self.master_port
        if demote and self.nodes[old].running:
            cli(old, "replicaof", HOST, str(new))
        self.wait_ready(new, timeout)
        return old, new
