"""The cluster and Sentinel test helpers build what they claim, and clean up after.

One cluster and one Sentinel group serve the whole module (each takes seconds to form);
the tests that fail over leave them in a consistent state for the next.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from agentbus.testing import unique_prefix
from agentbus.testing.redis_cluster import LocalCluster, SentinelGroup, cli, info

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
        reason="needs the redis-server and redis-cli commands",
    ),
    pytest.mark.timeout(90),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(masters=3, replicas=1, timeout=30)
    try:
        yield c.start()
    finally:
        c.stop()


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    g = SentinelGroup(replicas=1, sentinels=3, timeout=30)
    try:
        yield g.start()
    finally:
        g.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- LocalCluster --------------------------------------------------------------------------------
def test_cluster_has_three_masters_each_with_a_replica(cluster: LocalCluster) -> None:
    masters, replicas = cluster.master_ports(), cluster.replica_ports()
    assert len(masters) == 3
    assert len(replicas) == 3
    assert sorted(masters + replicas) == sorted(cluster.ports)
    assert all(port < 55536 for port in cluster.ports)
    assert {tuple(cluster.replica_of(m)) for m in masters} == {(r,) for r in replicas}
    assert cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in masters) + "/"
    assert cluster.url_for("t:").endswith("/?prefix=t%3A")


def test_cluster_covers_every_slot(cluster: LocalCluster) -> None:
    for port in cluster.ports:
        state = info(port, "cluster-info")
        assert state["cluster_state"] == "ok"
        assert state["cluster_slots_ok"] == "16384"
        assert state["cluster_known_nodes"] == "6"
    check = cli(cluster.ports[0], "--cluster", "check", f"127.0.0.1:{cluster.ports[0]}")
    assert "[OK] All 16384 slots covered." in check


def test_keys_written_through_redirects_spread_over_masters(cluster: LocalCluster) -> None:
    prefix = unique_prefix("spread")
    seed = cluster.master_ports()[0]
    for i in range(60):
        assert cli(seed, "-c", "set", f"{prefix}{i}", "v").strip() == "OK"
    counts = cluster.keys_per_master(f"{prefix}*")
    assert sum(counts.values()) == 60
    assert sum(1 for n in counts.values() if n > 0) == 3  # 60 random slots: all three
    assert sum(cluster.keys_per_master().values()) >= 60
    cpu = cluster.cpu_seconds()
    assert set(cpu) == set(cluster.ports)
    assert all(seconds > 0 for seconds in cpu.values())


def test_failover_swaps_master_and_replica(cluster: LocalCluster) -> None:
    prefix = unique_prefix("failover")
    seed = cluster.master_ports()[0]
    for i in range(20):
        cli(seed, "-c", "set", f"{prefix}{i}", str(i))
    before = sorted(cluster.master_ports())

    old, new = cluster.failover(timeout=30)

    assert old in before
    assert new not in before
    assert new in cluster.master_ports()
    assert old in cluster.replica_ports()
    assert cluster.replica_of(new) == [old]
    assert info(old, "replication")["master_link_status"] == "up"
    assert all(info(p, "cluster-info")["cluster_state"] == "ok" for p in cluster.ports)
    # The promoted replica serves the old master's slots, data included.
    assert sum(cluster.keys_per_master(f"{prefix}*").values()) == 20
    assert cli(new, "-c", "get", f"{prefix}7").strip() == "7"
    assert f"127.0.0.1:{new}" in cluster.url


def test_stop_leaves_no_process_and_no_directory() -> None:
    c = LocalCluster(masters=3, replicas=0, timeout=30)
    try:
        c.start()
        pids = [node.proc.pid for node in c.nodes.values() if node.proc is not None]
        assert len(pids) == 3
        assert all(_alive(pid) for pid in pids)
        directory = c.directory
        assert (directory / f"node-{c.ports[0]}" / "redis.log").exists()
    finally:
        c.stop()
    assert not any(_alive(pid) for pid in pids)
    assert not directory.exists()
    assert cli(c.ports[0], "ping") == ""
    c.stop()  # idempotent


def test_failed_block_keeps_the_logs() -> None:
    # The node group behaviour LocalCluster shares; a lone master and Sentinel start fastest.
    c = SentinelGroup(replicas=0, sentinels=1, timeout=30)
    pids: list[int] = []

    def fail_inside() -> None:
        with c:
            pids.extend(node.proc.pid for node in c.nodes.values() if node.proc is not None)
            raise RuntimeError("boom")

    try:
        with pytest.raises(RuntimeError) as caught:
            fail_inside()
        assert len(pids) == 2
        assert not any(_alive(pid) for pid in pids)
        assert any("logs kept in" in note for note in caught.value.__notes__)
        assert (c.directory / f"node-{c.data_ports[0]}" / "redis.log").exists()
        assert "Ready to accept connections" in c.logs()
        assert "Sentinel ID is" in c.logs()
    finally:
        c.stop()
        shutil.rmtree(c.directory, ignore_errors=True)


# -- SentinelGroup -------------------------------------------------------------------------------
def test_sentinels_know_the_master_and_replica(group: SentinelGroup) -> None:
    master, replica = group.data_ports
    assert group.master_port == master
    assert group.replica_ports() == [replica]
    for sentinel in group.sentinel_ports:
        reply = cli(sentinel, "sentinel", "get-master-addr-by-name", "mymaster").split()
        assert reply == ["127.0.0.1", str(master)]
    seeds = ",".join(f"127.0.0.1:{p}" for p in group.sentinel_ports)
    assert group.url == f"redis+sentinel://{seeds}/mymaster"
    key = unique_prefix("sentinel") + "k"
    assert cli(master, "set", key, "v").strip() == "OK"
    assert cli(master, "wait", "1", "5000").strip() == "1"
    assert cli(replica, "get", key).strip() == "v"
    cli(master, "del", key)


def test_sentinel_failover_moves_the_master_and_demotes_the_old(group: SentinelGroup) -> None:
    # The Sentinels' own demotion of the old master (what clients live through)...
    old, new = group.failover(timeout=40)
    assert (old, new) == (group.data_ports[0], group.data_ports[1])
    _assert_switched(group, old, new)
    # ...and the quick one, for tests that need only the new topology.
    back_old, back_new = group.failover(timeout=30, demote=True)
    assert (back_old, back_new) == (new, old)
    _assert_switched(group, new, old)


def _assert_switched(group: SentinelGroup, old: int, new: int) -> None:
    assert group.master_port == new
    assert info(new, "replication")["role"] == "master"
    demoted = info(old, "replication")
    assert demoted["role"] == "slave"
    assert demoted["master_port"] == str(new)
    assert demoted["master_link_status"] == "up"
    assert cli(old, "set", unique_prefix("ro"), "v").startswith("READONLY")


def test_min_replicas_to_write_reaches_every_data_node() -> None:
    g = SentinelGroup(replicas=1, sentinels=1, min_replicas_to_write=1, timeout=30)
    try:
        g.start()
        for port in g.data_ports:
            assert cli(port, "config", "get", "min-replicas-to-write").split()[1] == "1"
        master, replica = g.data_ports
        assert cli(master, "set", unique_prefix("mr"), "v").strip() == "OK"
        g.kill(replica)  # no replica left: the master refuses writes once the lag passes 1 s
        deadline = time.monotonic() + 10
        reply = ""
        while not reply.startswith("NOREPLICAS") and time.monotonic() < deadline:
            time.sleep(0.1)
            reply = cli(master, "set", unique_prefix("mr"), "v")
        assert reply.startswith("NOREPLICAS")
    finally:
        g.stop()
