"""detect_wiring: every launcher's variables, their order, and clear errors."""

from __future__ import annotations

import dataclasses

import pytest
from deeprc_core.wiring import requested_backend, resolve_backend

from deeprc_core import Wiring, WiringError, detect_wiring, env_vars, launchers


def test_single_process_without_variables() -> None:
    w = detect_wiring({})
    assert (w.rank, w.world_size, w.local_rank, w.local_world_size, w.node_rank, w.num_nodes) == (0, 1, 0, 1, 0, 1)
    assert w.source == "single" and not w.is_distributed and w.is_main


def test_wiring_is_frozen() -> None:
    w = detect_wiring({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.rank = 3  # type: ignore[misc]


def test_deeprc_variables_and_round_trip() -> None:
    env = {
        "DEEPRC_RANK": "5",
        "DEEPRC_WORLD_SIZE": "8",
        "DEEPRC_LOCAL_RANK": "1",
        "DEEPRC_LOCAL_WORLD_SIZE": "4",
        "DEEPRC_NODE_RANK": "1",
        "DEEPRC_NUM_NODES": "2",
        "DEEPRC_MASTER_ADDR": "node0",
        "DEEPRC_MASTER_PORT": "29500",
        "DEEPRC_HOSTS": ",".join(["node0"] * 4 + ["node1"] * 4),
    }
    w = detect_wiring(env)
    assert w == Wiring(5, 8, 1, 4, 1, 2, "node0", 29500, "deeprc", tuple(["node0"] * 4 + ["node1"] * 4))
    assert detect_wiring(w.as_env()) == dataclasses.replace(w, source="deeprc")
    assert all(name.startswith("DEEPRC_") for name in env_vars.ALL)
    assert set(w.as_env()) <= set(env_vars.ALL)


def test_deeprc_wins_over_torchrun_and_mpi() -> None:
    env = {
        "DEEPRC_RANK": "1",
        "DEEPRC_WORLD_SIZE": "2",
        "RANK": "0",
        "WORLD_SIZE": "2",
        "OMPI_COMM_WORLD_RANK": "0",
        "OMPI_COMM_WORLD_SIZE": "2",
    }
    w = detect_wiring(env)
    assert (w.source, w.rank) == ("deeprc", 1)


def test_torchrun() -> None:
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "1234",
    }
    w = detect_wiring(env)
    assert (w.source, w.rank, w.world_size, w.local_rank, w.local_world_size, w.node_rank, w.num_nodes) == (
        "torchrun",
        3,
        4,
        1,
        2,
        1,
        2,
    )
    assert (w.master_addr, w.master_port) == ("10.0.0.1", 1234)


def test_lightning_launcher_without_rank() -> None:
    """`python train.py` with Trainer(strategy="ddp", devices=2): Lightning sets LOCAL_RANK, NODE_RANK, WORLD_SIZE."""
    env = {"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "4"}
    w = detect_wiring(env)
    assert (w.source, w.rank, w.world_size, w.local_rank, w.node_rank) == ("lightning", 1, 2, 1, 0)
    assert detect_wiring({**env, "RANK": "1"}).source == "torchrun"  # torchrun always sets RANK
    with pytest.raises(WiringError, match="NODE_RANK=1.*Trainer"):
        detect_wiring({**env, "NODE_RANK": "1"})


def test_torchrun_wins_over_mpi() -> None:
    env = {"RANK": "1", "WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}
    assert detect_wiring(env).source == "torchrun"


def test_radical_pilot_with_local_rank_from_mpi_underneath() -> None:
    env = {
        "RP_RANK": "2",
        "RP_RANKS": "4",
        "OMPI_COMM_WORLD_LOCAL_RANK": "0",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
        "OMPI_COMM_WORLD_RANK": "2",
        "OMPI_COMM_WORLD_SIZE": "4",
    }
    w = detect_wiring(env)
    assert (w.source, w.rank, w.world_size, w.local_rank, w.local_world_size, w.node_rank, w.num_nodes) == (
        "radical",
        2,
        4,
        0,
        2,
        1,
        2,
    )


def test_radical_pilot_alone() -> None:
    w = detect_wiring({"RP_RANK": "1", "RP_RANKS": "3"})
    assert (w.source, w.rank, w.world_size, w.local_rank) == ("radical", 1, 3, 1)


def test_openmpi() -> None:
    env = {
        "OMPI_COMM_WORLD_RANK": "5",
        "OMPI_COMM_WORLD_SIZE": "6",
        "OMPI_COMM_WORLD_LOCAL_RANK": "2",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "3",
        "OMPI_COMM_WORLD_NODE_RANK": "2",
    }
    w = detect_wiring(env)
    assert (w.source, w.rank, w.world_size, w.local_rank, w.local_world_size, w.node_rank, w.num_nodes) == (
        "openmpi",
        5,
        6,
        2,
        3,
        1,
        2,
    )


def test_mpich_hydra() -> None:
    env = {"PMI_RANK": "1", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}
    w = detect_wiring(env)
    assert (w.source, w.rank, w.world_size, w.local_rank, w.local_world_size, w.node_rank, w.num_nodes) == (
        "mpich",
        1,
        4,
        1,
        2,
        0,
        2,
    )


def test_cray_pals_wins_over_pmi_and_names_its_node() -> None:
    env = {
        "PALS_RANKID": "3",
        "PMI_RANK": "3",
        "PMI_SIZE": "4",
        "PALS_LOCAL_RANKID": "1",
        "PALS_NODEID": "1",
        "PMI_LOCAL_SIZE": "2",
    }
    w = detect_wiring(env)
    assert (w.source, w.rank, w.world_size, w.local_rank, w.local_world_size, w.node_rank, w.num_nodes) == (
        "pals",
        3,
        4,
        1,
        2,
        1,
        2,
    )


def test_cray_pals_without_local_size_keeps_the_node_index() -> None:
    w = detect_wiring({"PALS_RANKID": "3", "PMI_SIZE": "4", "PALS_LOCAL_RANKID": "1", "PALS_NODEID": "1"})
    assert (w.rank, w.node_rank, w.local_rank) == (3, 1, 1) and w.num_nodes >= 2


def test_slurm_step() -> None:
    env = {
        "SLURM_PROCID": "3",
        "SLURM_NTASKS": "4",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_STEP_NUM_NODES": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_STEP_ID": "0",
    }
    w = detect_wiring(env)
    assert (w.source, w.rank, w.world_size, w.local_rank, w.local_world_size, w.node_rank, w.num_nodes) == (
        "slurm",
        3,
        4,
        1,
        2,
        1,
        2,
    )


def test_slurm_batch_script_is_one_process() -> None:
    # Outside an srun step (no SLURM_STEP_ID) the batch script is a single process.
    w = detect_wiring({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"})
    assert (w.source, w.world_size) == ("single", 1)


def test_uneven_nodes_get_a_valid_node_rank() -> None:
    w = detect_wiring({"SLURM_PROCID": "4", "SLURM_NTASKS": "5", "SLURM_NNODES": "2", "SLURM_STEP_ID": "1"})
    assert 0 <= w.node_rank < w.num_nodes == 2 and 0 <= w.local_rank < w.local_world_size


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"RANK": "4", "WORLD_SIZE": "4"}, ["RANK=4", "WORLD_SIZE=4"]),
        ({"RANK": "0"}, ["RANK", "WORLD_SIZE"]),
        ({"WORLD_SIZE": "2"}, ["WORLD_SIZE", "RANK"]),
        ({"DEEPRC_RANK": "2", "DEEPRC_WORLD_SIZE": "2"}, ["DEEPRC_RANK=2", "DEEPRC_WORLD_SIZE=2"]),
        ({"DEEPRC_RANK": "0"}, ["DEEPRC_RANK", "DEEPRC_WORLD_SIZE"]),
        ({"DEEPRC_RANK": "x", "DEEPRC_WORLD_SIZE": "2"}, ["DEEPRC_RANK", "'x'"]),
        ({"RP_RANK": "0"}, ["RP_RANK", "RP_RANKS"]),
        ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "2"}, ["OMPI_COMM_WORLD_RANK=3"]),
        ({"OMPI_COMM_WORLD_RANK": "0"}, ["OMPI_COMM_WORLD_SIZE"]),
        ({"PMI_RANK": "0"}, ["PMI_RANK", "PMI_SIZE"]),
        ({"PMI_RANK": "-1", "PMI_SIZE": "2"}, ["PMI_RANK=-1"]),
        ({"PALS_RANKID": "0"}, ["PALS_RANKID"]),
        ({"SLURM_PROCID": "2", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0"}, ["SLURM_PROCID=2", "SLURM_NTASKS=2"]),
        ({"RANK": "0", "WORLD_SIZE": "0"}, ["WORLD_SIZE=0"]),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"}, ["local rank 2"]),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "http"}, ["MASTER_PORT"]),
        ({"DEEPRC_RANK": "0", "DEEPRC_WORLD_SIZE": "2", "DEEPRC_HOSTS": "a,b,c"}, ["DEEPRC_HOSTS", "3 hosts"]),
    ],
)
def test_inconsistent_variables_raise_naming_them(env: dict[str, str], names: list[str]) -> None:
    with pytest.raises(WiringError) as info:
        detect_wiring(env)
    for name in names:
        assert name in str(info.value)


def test_wiring_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        detect_wiring({"RANK": "9", "WORLD_SIZE": "2"})


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPRC_RANK", "1")
    monkeypatch.setenv("DEEPRC_WORLD_SIZE", "3")
    assert (detect_wiring().rank, detect_wiring().world_size) == (1, 3)


def test_slurm_step_rendezvous_is_the_first_node_and_a_shared_port() -> None:
    env = {
        "SLURM_PROCID": "2",
        "SLURM_NTASKS": "3",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "1",
        "SLURM_STEP_NUM_NODES": "2",
        "SLURM_STEP_TASKS_PER_NODE": "2,1",
        "SLURM_STEP_NODELIST": "cn[07-08]",
        "SLURM_JOB_ID": "1234",
        "SLURM_STEP_ID": "0",
    }
    w = detect_wiring(env)
    assert (w.local_rank, w.local_world_size, w.node_rank, w.master_addr) == (0, 1, 1, "cn07")
    first = detect_wiring({**env, "SLURM_PROCID": "0", "SLURM_NODEID": "0"})
    assert first.master_port == w.master_port and w.master_port is not None and w.master_port % 2 == 0
    assert detect_wiring({**env, "SLURM_STEP_ID": "1"}).master_port != w.master_port
    assert detect_wiring({**env, "SLURM_STEP_RESV_PORTS": "12000-12003"}).master_port == 12000
    given = detect_wiring({**env, "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "29400"})
    assert (given.master_addr, given.master_port) == ("10.1.2.3", 29400)


@pytest.mark.parametrize(
    ("raw", "want"), [("", None), ("auto", None), ("GLOO", "gloo"), ("nccl", "nccl"), ("mpi", "mpi")]
)
def test_requested_backend(raw: str, want: str | None) -> None:
    assert requested_backend({"DEEPRC_BACKEND": raw}) == want


def test_requested_backend_rejects_unknown_values() -> None:
    with pytest.raises(WiringError, match="DEEPRC_BACKEND='ucc'.*nccl, gloo, mpi"):
        requested_backend({"DEEPRC_BACKEND": "ucc"})


@pytest.mark.parametrize(
    ("requested", "has_gpu", "want"),
    [
        (None, True, "nccl"),
        (None, False, "gloo"),
        ("auto", True, "nccl"),
        ("auto", False, "gloo"),
        ("", False, "gloo"),
        ("gloo", True, "gloo"),  # an explicit choice wins over the GPUs
        ("nccl", False, "nccl"),  # the caller checks that it can honour it (torch, TF fail with their own message)
        ("MPI", True, "mpi"),
    ],
)
def test_resolve_backend_is_the_one_resolution_of_auto(requested: str | None, has_gpu: bool, want: str) -> None:
    """Launcher (--gpus-per-rank), torch (its device) and TF (its device list) all resolve auto here."""
    assert resolve_backend(requested, has_gpu) == want
    assert resolve_backend(requested_backend({"DEEPRC_BACKEND": requested or ""}), has_gpu) == want


def test_resolve_backend_names_a_bad_value() -> None:
    with pytest.raises(WiringError, match="backend 'ucc'.*auto, nccl, gloo, mpi"):
        resolve_backend("ucc", False)


def _record_env(launcher: launchers.Launcher, rank: int = 1, size: int = 4) -> dict[str, str]:
    """The variables ``launcher`` would set for rank 1 of 4, two ranks per node, from its record alone."""
    env = {launcher.rank[0]: str(rank), launcher.size[0]: str(size)}
    if launcher.local_rank:
        env[launcher.local_rank[0]] = str(rank % 2)
    if launcher.local_size:
        env[launcher.local_size[0]] = "2"
    for alternatives in launcher.also_needs:
        env.setdefault(alternatives[0], "0")
    return env


@pytest.mark.parametrize("launcher", launchers.LAUNCHERS, ids=lambda launcher: launcher.name)
def test_every_record_of_the_launcher_table_is_detected_and_read(launcher: launchers.Launcher) -> None:
    """Adding a launcher is one record: detect_wiring reads it with no code of its own."""
    env = _record_env(launcher)
    if launcher is launchers.TORCHRUN or launcher is launchers.DEEPRC:
        env.update({"MASTER_ADDR": "n0", "MASTER_PORT": "29500", "DEEPRC_MASTER_ADDR": "n0"})
    w = detect_wiring(env)
    assert (w.source, w.rank, w.world_size) == (launcher.name, 1, 4)
    if launcher.local_rank and launcher.local_size and launcher is not launchers.RADICAL:
        assert (w.local_rank, w.local_world_size) == (1, 2)
    assert launcher.detect(env) and launchers.BY_NAME[launcher.name] is launcher


def test_flux_and_radical_over_flux() -> None:
    flux = {"FLUX_TASK_RANK": "3", "FLUX_JOB_SIZE": "4", "FLUX_TASK_LOCAL_ID": "1", "FLUX_TASK_LOCAL_SIZE": "2"}
    w = detect_wiring(flux)
    assert (w.source, w.rank, w.local_rank, w.node_rank, w.num_nodes) == ("flux", 3, 1, 1, 2)
    rp = detect_wiring({**flux, "RP_RANK": "3", "RP_RANKS": "4"})  # RP's task on Flux: Flux says where it sits
    assert (rp.source, rp.local_rank, rp.local_world_size) == ("radical", 1, 2)


def test_mpi_world_and_rendezvous_questions_use_the_table() -> None:
    assert launchers.launched_by_mpi({"PMIX_RANK": "0"}) and not launchers.launched_by_mpi({"RANK": "0"})
    assert all(launchers.can_agree_over_mpi(n) for n in ("openmpi", "mpich", "pals", "slurm", "flux", "radical"))
    assert not launchers.can_agree_over_mpi("torchrun") and not launchers.can_agree_over_mpi("single")
