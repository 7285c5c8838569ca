"""deeprc-launch through RADICAL-Pilot's SLURM path on the simulated cluster.

The client runs on the head node (the login node) with ``--resource-config`` (the
cluster's own config, the worked example of docs/clusters.md); psij submits the pilot
with sbatch; RP's agent runs in the batch job on node1 and starts the 4 ranks with srun
across node1 and node2.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.support.cluster import Cluster
from tests.support.ranks import REPO, launcher_free_env

pytestmark = [pytest.mark.slow, pytest.mark.launcher, pytest.mark.torch]

PROBE = Path(__file__).with_name("rp_probe.py")


def deeprc_launch(cluster: Cluster, args: list[str], home: Path, timeout: float = 600) -> tuple[int, str, str]:
    """Run deeprc-launch on the head node with the cluster's resource config; (exit code, stdout, stderr)."""
    config = cluster.root / "cluster.json"
    config.write_text(json.dumps(cluster.resource_config(), indent=1))
    (cluster.root / "sandbox").mkdir(exist_ok=True)
    env = {**launcher_free_env(), "DEEPRC_HOME": str(home), "RADICAL_DEFAULT_IFACE": "eth0"}
    exe = str(Path(os.sys.executable).with_name("deeprc-launch"))
    cmd = [exe, "--resource-config", str(config), "--nodes", "2", "--ranks-per-node", "2", "--walltime", "15", *args]
    done = cluster.run("head", cmd, env=env, timeout=timeout, cwd=REPO)
    return done.returncode, done.stdout, done.stderr


def test_deeprc_launch_on_slurm_through_rp(cluster: Cluster, tmp_path: Path) -> None:
    out = cluster.root / "rp-out"
    out.mkdir(exist_ok=True)
    home = cluster.root / "home"
    # Rank 3 (on node2) exits with 3 after it has done its work: the launch must exit with the job's code.
    code, stdout, stderr = deeprc_launch(cluster, [str(PROBE), str(out), "3"], home)
    assert code == 3, f"exit {code}\n{stdout[-3000:]}\n{stderr[-5000:]}"
    # Rank 0's output streamed live to the client; the failing rank is named.
    assert "rank 0 of 4 on node1: master node1" in stdout
    assert "exit code 3" in stderr and "rank 3 (on node2) failed first" in stderr, stderr[-3000:]
    # The pilot went through sbatch: the controller allocated both nodes to one batch job.
    ctld = (cluster.root / "ctld" / "slurmctld.log").read_text()
    assert re.search(r"Allocate JobId=\d+ NodeList=node\[1-2\]", ctld)
    node1, node2 = cluster.compute
    got = [json.loads((out / f"wiring-{r}.json").read_text()) for r in range(4)]
    for r, w in enumerate(got):
        node = cluster.compute[r // 2]
        assert (w["rank"], w["world_size"], w["local_rank"], w["node_rank"], w["num_nodes"]) == (r, 4, r % 2, r // 2, 2)
        assert w["hostname"] == node.name and w["source"] == "deeprc"
        assert w["master_ip"] == node1.addr and w["gloo_ifname"] == "eth0"
        assert w["allreduce"] == 6.0
        hosts = [h.rsplit(":", 1)[0] for h in w["tf_config"]["cluster"]["worker"]]
        assert hosts == [node1.name, node1.name, node2.name, node2.name]
    # Every rank's log is kept.
    runs = sorted((home / "runs").iterdir())
    assert len(runs) == 1
    for r in range(4):
        assert (runs[0] / f"rank-{r}.out").exists() and (runs[0] / f"rank-{r}.err").exists()
    assert "rank 3 of 4 on node2" in (runs[0] / "rank-3.out").read_text()
