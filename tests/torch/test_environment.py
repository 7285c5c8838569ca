"""DeepRCEnvironment / DeepRCStrategy from launcher variables, and the two Lightning flavours."""

from __future__ import annotations

from datetime import timedelta

import deeprc_torch.pl as dtpl
import lightning as L
import pytest
import pytorch_lightning as pl
import torch
from lightning.fabric.plugins.environments import ClusterEnvironment
from lightning_fabric.plugins.environments import ClusterEnvironment as PLClusterEnvironment

import deeprc_core as dc
import deeprc_torch as dt

OMPI_ONE_HOST = {
    "OMPI_COMM_WORLD_RANK": "3",
    "OMPI_COMM_WORLD_SIZE": "4",
    "OMPI_COMM_WORLD_LOCAL_RANK": "3",
    "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
    "MASTER_ADDR": "10.0.0.1",
    "MASTER_PORT": "29400",
}
SLURM_TWO_NODES = {
    "SLURM_PROCID": "5",
    "SLURM_NTASKS": "8",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_STEP_ID": "0",
    "SLURM_NTASKS_PER_NODE": "4",
    "SLURM_STEP_NUM_NODES": "2",
    "MASTER_ADDR": "node0",
    "MASTER_PORT": "29400",
}


@pytest.mark.parametrize("flavour", [dt, dtpl])
def test_environment_from_mpirun_on_one_host(flavour: object) -> None:
    env = flavour.DeepRCEnvironment(dc.detect_wiring(OMPI_ONE_HOST))  # type: ignore[attr-defined]
    assert env.creates_processes_externally
    assert (env.global_rank(), env.world_size(), env.local_rank(), env.node_rank()) == (3, 4, 3, 0)
    assert (env.main_address, env.main_port) == ("10.0.0.1", 29400)
    env.validate_settings(num_devices=1, num_nodes=1)  # Lightning's defaults: fine
    with pytest.raises(ValueError, match="contradicts the launcher"):
        env.validate_settings(num_devices=3, num_nodes=1)


def test_environment_on_two_slurm_nodes() -> None:
    env = dt.DeepRCEnvironment(dc.detect_wiring(SLURM_TWO_NODES))
    assert (env.global_rank(), env.world_size(), env.local_rank(), env.node_rank()) == (5, 8, 1, 1)


def test_detect_is_true_under_deeprc_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPRC_RANK", raising=False)
    assert not dt.DeepRCEnvironment.detect()
    monkeypatch.setenv("DEEPRC_RANK", "0")
    assert dt.DeepRCEnvironment.detect()


def test_strategy_defaults_and_cpu_device_for_any_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPRC_COMM_TIMEOUT", raising=False)
    strategy = dt.DeepRCStrategy(cluster_environment=dt.DeepRCEnvironment(dc.detect_wiring(OMPI_ONE_HOST)))
    assert strategy._timeout == timedelta(minutes=5)
    strategy.parallel_devices = [torch.device("cpu")]
    assert strategy.root_device == torch.device("cpu")  # local rank 3 with devices=1 on CPU
    assert strategy._get_process_group_backend() == "gloo"
    assert strategy.distributed_sampler_kwargs == {"num_replicas": 4, "rank": 3}
    assert dt.DeepRCStrategy(timeout=20)._timeout == timedelta(seconds=20)
    assert dt.DeepRCStrategy(process_group_backend="mpi")._get_process_group_backend() == "mpi"
    monkeypatch.setenv("DEEPRC_COMM_TIMEOUT", "42")
    assert dt.DeepRCStrategy()._timeout == timedelta(seconds=42)


def test_both_lightning_flavours_share_one_implementation() -> None:
    assert issubclass(dt.DeepRCDataModule, L.LightningDataModule)
    assert not issubclass(dt.DeepRCDataModule, pl.LightningDataModule)
    assert issubclass(dtpl.DeepRCDataModule, pl.LightningDataModule)
    assert issubclass(dt.DeepRCEnvironment, ClusterEnvironment)
    assert issubclass(dtpl.DeepRCEnvironment, PLClusterEnvironment)
    assert issubclass(dtpl.DeepRCStrategy, pl.strategies.DDPStrategy)
    # the same checkpoint key in both flavours
    assert dt.DeepRCDataModule.__qualname__ == dtpl.DeepRCDataModule.__qualname__ == "DeepRCDataModule"
    assert isinstance(dtpl.DeepRCStrategy().cluster_environment, dtpl.DeepRCEnvironment)
