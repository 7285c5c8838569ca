"""The simulated cluster itself: nodes, SLURM, MPI, and nothing left behind after ``down``."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.cluster import Cluster, leftovers, netns_pids, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


def test_nodes_have_their_own_names_and_hosts(cluster: Cluster) -> None:
    for node in cluster.compute:
        done = cluster.run(node.name, ["sh", "-c", "hostname; getent hosts $(hostname)"], check=True)
        name, resolved = done.stdout.splitlines()
        assert name == node.name
        assert resolved.split()[0] == node.addr  # never a loopback address
    # The real /etc/hosts does not know the nodes.
    assert "node1" not in open("/etc/hosts").read().split()


def test_srun_and_mpirun_span_both_nodes(cluster: Cluster) -> None:
    srun = cluster.run(
        "head", ["srun", "-N2", "--ntasks-per-node=2", "sh", "-c", "echo $(hostname) $SLURM_PROCID"], check=True
    )
    assert sorted(srun.stdout.split("\n")[:-1]) == ["node1 0", "node1 1", "node2 2", "node2 3"]
    mpi = cluster.run(
        "node1",
        ["mpirun", "--host", "node1:2,node2:2", "sh", "-c", "echo $(hostname) $OMPI_COMM_WORLD_RANK"],
        check=True,
    )
    assert sorted(mpi.stdout.split("\n")[:-1]) == ["node1 0", "node1 1", "node2 2", "node2 3"]


def test_down_leaves_nothing() -> None:
    c = Cluster(nodes=2).up()
    root, tag = c.root, c.tag
    nodes = {n.name: n.netns for n in c.all_nodes}
    pids = [p.pid for p in c.daemons] + [n.pid for n in c.all_nodes]
    # Something still running on a node (as a crashed test would leave it) must go too.
    stray = c.popen("node2", ["sleep", "300"])
    assert c.pids_on("node2")
    assert c.down() == []
    stray.wait(timeout=10)
    assert leftovers(tag) == []
    assert not root.exists()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in listed for ns in nodes.values())
    assert all(netns_pids(ns) == [] for ns in nodes.values())
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} of the cluster is still alive"
