"""The acceptance runs across 2 nodes x 2 ranks, under srun and mpirun.

The same checks as on one host (tests/torch/test_lightning_ddp.py, tests/tf/test_multiworker.py,
tests/core/test_engine.py), now with ranks on two simulated nodes:

* Lightning with DeepRCDataModule + DeepRCStrategy: identical weights on every rank, each
  training row seen once, equal steps;
* Keras MultiWorkerMirroredStrategy ``model.fit``: identical weights, agreed steps, every
  window once;
* the engine: joins, sorts, groupbys and shuffles equal to pyarrow on the gathered data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.cluster.launch import run_across
from tests.support.cluster import Cluster

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "tf")]  # camels.py and ranks_fit.py import each other by plain name

pytestmark = pytest.mark.slow
LAUNCHERS = ["srun", "mpirun"]


@pytest.mark.torch
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_lightning_across_nodes(cluster: Cluster, launcher: str) -> None:
    from tests.torch.test_lightning_ddp import _check_training

    run = run_across(
        cluster, launcher, TESTS / "torch" / "ranks_lightning.py", "train", timeout=400, args=("lightning",)
    )
    # Under mpirun without MASTER_ADDR the ranks agree rank 0's address through MPI first, and keep that communicator.
    _check_training([run.values[r] for r in range(4)], 4, per_node=2, comm="mpi" if launcher == "mpirun" else "torch")


@pytest.mark.tensorflow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_keras_fit_across_nodes(cluster: Cluster, launcher: str) -> None:
    from tests.tf.test_multiworker import _check_fit

    run = run_across(cluster, launcher, TESTS / "tf" / "ranks_fit.py", "fit_camels", timeout=400, args=("pad",))
    values = [run.values[r] for r in range(4)]
    _check_fit(values, "pad")
    node1, node2 = cluster.compute
    workers = __import__("json").loads(values[0]["tf_config"])["cluster"]["worker"]
    assert [w.rsplit(":", 1)[0] for w in workers] == [node1.addr, node1.addr, node2.addr, node2.addr]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_engine_across_nodes(cluster: Cluster, launcher: str) -> None:
    from tests.core.test_engine import SEED, check_all

    run = run_across(cluster, launcher, TESTS / "core" / "ranks_engine.py", "all_ops", timeout=300, args=(str(SEED),))
    check_all([run.values[r] for r in range(4)])
