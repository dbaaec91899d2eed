"""Throwaway Redis Cluster and Sentinel deployments for tests, on loopback ports.

::

    with LocalCluster(masters=3, replicas=1) as cluster:
        async with Runtime(cluster.url_for("t:")) as rt:
            ...
            old, new = cluster.failover()      # a replica takes over old's slots

    with SentinelGroup(replicas=1, sentinels=3) as group:
        ...group.url...                       # redis+sentinel://127.0.0.1:S1,.../mymaster
        old, new = group.failover()           # waits until ``old`` is a replica of ``new``

Like :class:`~agentbus.testing.redis_server.RedisServer` (each node is one), nothing here
talks to Redis with redis-py: commands go through ``redis-cli``, readiness comes from the
logs and from ``CLUSTER INFO``/``INFO``/``SENTINEL`` replies. Each node has its own
directory under one temp dir, kept when the ``with`` block fails (its path is added to
the exception's notes) so the logs can be read.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from ._redis_nodes import DATA_CONFIG, HOST, NodeGroup, cli, cluster_ports, info, poll, wait
from .redis_sentinel import SentinelGroup

__all__ = ["LocalCluster", "SentinelGroup", "cli", "cluster_ports", "info"]

_SLOTS = 16384


class LocalCluster(NodeGroup):
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, on 127.0.0.1.

    Started by ``start()`` or ``with``; ready when every node reports ``cluster_state:ok``
    with all 16384 slots served and every replica's link is up. ``node_timeout_ms`` is the
    ``cluster-node-timeout`` (how soon a dead master is replaced by its replica).
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        *,
        directory: str | Path | None = None,
        timeout: float = 30.0,
        node_timeout_ms: int = 2000,
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        super().__init__(directory, "cluster")
        self.masters, self.replicas, self.timeout = masters, replicas, timeout
        self.ports = cluster_ports(masters * (1 + replicas))
        config = [
            *DATA_CONFIG,
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-node-timeout {node_timeout_ms}",
        ]
        for port in self.ports:
            self._node(port, config)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> LocalCluster:
        """Start the nodes, create the cluster and wait until it serves every slot."""
        self._start_all(self.timeout)
        try:
            done = subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"{HOST}:{p}" for p in self.ports),
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                capture_output=True, text=True, timeout=self.timeout, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
                raise RuntimeError(
                    f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}"
                )
            self.wait_ok(self.timeout)
        except BaseException:
            self.stop(keep_directory=True)
            raise
        return self

    def __enter__(self) -> LocalCluster:
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
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,.../`` with the current masters as seeds."""
        seeds = ",".join(f"{HOST}:{p}" for p in self.master_ports() or self._running())
        return f"redis+cluster://{seeds}/"

    def url_for(self, prefix: str | None = None) -> str:
        """:attr:`url` with ``?prefix=PREFIX`` (the runtime's key prefix) when given."""
        return self.url if prefix is None else f"{self.url}?prefix={quote(prefix, safe='')}"

    # -- roles (asked live) ---------------------------------------------------------------------
    def _replication(self) -> dict[int, dict[str, str]]:
        return {p: info(p, "replication") for p in self._running()}

    def master_ports(self) -> list[int]:
        """Running nodes that say they are masters and serve slots, in port order."""
        return sorted(
            p
            for p, r in self._replication().items()
            if r.get("role") == "master" and self._serves_slots(p)
        )

    def replica_ports(self) -> list[int]:
        """Running nodes that say they are replicas, in port order."""
        return sorted(p for p, r in self._replication().items() if r.get("role") == "slave")

    def replica_of(self, master_port: int) -> list[int]:
        """The running replicas that replicate ``master_port``."""
        return sorted(
            p
            for p, r in self._replication().items()
            if r.get("role") == "slave" and r.get("master_port") == str(master_port)
        )

    def master_of(self, key: str) -> int:
        """The port of the master that serves ``key``'s hash slot now."""
        masters = self.master_ports()
        slot = int(cli(masters[0], "cluster", "keyslot", key).strip())
        for port in masters:
            for line in cli(port, "cluster", "nodes").splitlines():
                f = line.split()
                if len(f) > 8 and "myself" in f[2].split(","):
                    for r in f[8:]:
                        lo, _, hi = r.partition("-")
                        if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                            return port
        raise LookupError(f"no master serves slot {slot} of {key!r}")

    def _serves_slots(self, port: int) -> bool:
        for line in cli(port, "cluster", "nodes").splitlines():
            fields = line.split()
            # id addr flags master ping pong epoch link [slot ...]: "myself" marks this node.
            if len(fields) >= 8 and "myself" in fields[2].split(","):
                return len(fields) > 8
        return False

    def _cluster_ok(self) -> bool:
        for port in self._running():
            ci = info(port, "cluster-info")
            if ci.get("cluster_state") != "ok" or ci.get("cluster_slots_ok") != str(_SLOTS):
                return False
        return True

    def _links_up(self) -> bool:
        return all(
            r.get("master_link_status") == "up"
            for r in self._replication().values()
            if r.get("role") == "slave"
        )

    def _views_agree(self) -> bool:
        # Every running node must see the same nodes in the same roles: clients ask any of
        # them for the slot map, and a replica wins a failover election only if the masters
        # know whose replica it is.
        views = set()
        for port in self._running():
            view = set()
            for line in cli(port, "cluster", "nodes").splitlines():
                # id addr flags master-id ping pong epoch link [slot ...]
                f = line.split()
                if len(f) < 8:
                    return False
                flags = f[2].split(",")
                if "handshake" in flags or "noaddr" in flags:
                    return False
                role = "master" if "master" in flags else "slave"
                view.add((f[0], role, f[3], "fail" in flags, tuple(f[8:])))
            views.add(frozenset(view))
        return len(views) == 1

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every running node reports ``cluster_state:ok`` with all slots served,
        replica links are up and the nodes agree on the roles and slots."""
        want = self.masters * (1 + self.replicas)
        wait(
            lambda: (
                all(
                    info(p, "cluster-info").get("cluster_known_nodes") == str(want)
                    for p in self._running()
                )
                and self._cluster_ok()
                and self._links_up()
                and self._views_agree()
            ),
            timeout,
            "cluster_state:ok on every node",
            self.logs,
        )

    # -- faults ---------------------------------------------------------------------------------
    def failover(self, master_port: int | None = None, timeout: float = 30.0) -> tuple[int, int]:
        """``CLUSTER FAILOVER`` on a replica of ``master_port`` (default: the first master).

        Waits until the replica is a master, the old master its replica with the link up,
        and the cluster is ok everywhere. Returns ``(old, new)`` ports.
        """
        old = master_port if master_port is not None else self.master_ports()[0]
        candidates = self.replica_of(old)
        if not candidates:
            raise RuntimeError(f"{old} has no running replica to fail over to")
        new = candidates[0]

        def swapped() -> bool:
            r_new, r_old = info(new, "replication"), info(old, "replication")
            return (
                r_new.get("role") == "master"
                and r_old.get("role") == "slave"
                and r_old.get("master_port") == str(new)
                and r_old.get("master_link_status") == "up"
            )

        deadline = time.monotonic() + timeout
        promoted = False
        while not promoted:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no promotion of {new} within {timeout}s\n{self.logs()}")
            reply = cli(new, "cluster", "failover").strip()
            if reply != "OK":
                raise RuntimeError(f"CLUSTER FAILOVER on {new} answered {reply!r}")
            # A manual failover gives up after 5 s (an election lost under load, say):
            # ask again while time is left.
            promoted = poll(lambda: info(new, "replication").get("role") == "master", min(6, left))
        left = max(1.0, deadline - time.monotonic())
        wait(swapped, left, f"failover of {old} to {new}", self.logs)
        self.wait_ok(left)
        return old, new

    # -- measurements ---------------------------------------------------------------------------
    def keys_per_master(self, pattern: str = "*") -> dict[int, int]:
        """How many keys each master holds (matching ``pattern``; ``*`` uses DBSIZE)."""
        counts: dict[int, int] = {}
        for port in self.master_ports():
            if pattern == "*":
                counts[port] = int(cli(port, "dbsize").strip() or 0)
            else:
                out = cli(port, "--scan", "--pattern", pattern, timeout=60.0)
                counts[port] = len(out.splitlines())
        return counts

    def cpu_seconds(self) -> dict[int, float]:
        """CPU time (user + system) each running node has used, from ``INFO cpu``."""
        out: dict[int, float] = {}
        for port in self._running():
            cpu = info(port, "cpu")
            if cpu:
                out[port] = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        return out
