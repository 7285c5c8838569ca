"""Wiring across two nodes through each real launcher: ranks, nodes, rendezvous, interface, TF_CONFIG."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.launch import run_across
from tests.support.cluster import Cluster

BODIES = Path(__file__).with_name("bodies.py")

pytestmark = [pytest.mark.slow, pytest.mark.torch]


@pytest.mark.parametrize("launcher", ["srun", "mpirun", "torchrun"])
def test_wiring_across_nodes(cluster: Cluster, launcher: str) -> None:
    run = run_across(cluster, launcher, BODIES, "wiring", timeout=180)
    node1, node2 = cluster.compute
    by_rank = [run.values[r] for r in range(4)]
    for r, got in enumerate(by_rank):
        node = cluster.compute[r // 2]
        assert (got["rank"], got["world_size"]) == (r, 4)
        assert (got["local_rank"], got["local_world_size"]) == (r % 2, 2), got
        assert (got["node_rank"], got["num_nodes"]) == (r // 2, 2), got
        assert got["hostname"] == node.name
        # Rank 0's node, by address: never loopback.
        assert got["master_ip"] == node1.addr, got
        assert got["master_addr"] not in ("127.0.0.1", "localhost")
        # gloo / NCCL use the interface that holds this node's address on the cluster network.
        assert got["gloo_ifname"] == got["nccl_ifname"] == "eth0"
        assert got["interfaces"]["eth0"] == node.addr
        assert got["allreduce"] == 0 + 1 + 2 + 3
        assert got["backend"] == "gloo"
        workers = got["tf_config"]["cluster"]["worker"]
        assert [w.rsplit(":", 1)[0] for w in workers] == [node1.addr, node1.addr, node2.addr, node2.addr], workers
        assert got["tf_config"]["task"] == {"type": "worker", "index": r}
    assert by_rank[0]["tf_config"] == {**by_rank[3]["tf_config"], "task": by_rank[0]["tf_config"]["task"]}
    expected_source = {"srun": "slurm", "mpirun": "openmpi", "torchrun": "torchrun"}[launcher]
    assert {got["source"] for got in by_rank} == {expected_source}
