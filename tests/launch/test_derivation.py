"""Host / local-rank derivation from launcher variables and RP rank/host files (no pilot)."""

from __future__ import annotations

import json

from deeprc_launch.wiring_derivation import (
    derive_hosts,
    expand_slurm_nodelist,
    launcher_info,
    layout_from_hosts,
    node_visible_devices,
    parse_hostfile,
    resolve_layout,
    slurm_tasks_per_node,
    tf_config,
)


def test_openmpi_variables_and_rankfile() -> None:
    env = {
        "OMPI_COMM_WORLD_RANK": "3",
        "OMPI_COMM_WORLD_SIZE": "4",
        "OMPI_COMM_WORLD_LOCAL_RANK": "1",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
        "OMPI_COMM_WORLD_NODE_RANK": "1",  # a rank *within* the node across jobs: never read as the node's index
    }
    info = launcher_info(env)
    assert (info.kind, info.rank, info.size, info.local_rank, info.local_size, info.node_rank) == (
        "openmpi",
        3,
        4,
        1,
        2,
        None,
    )
    rankfile = "rank 0=n1 slots=0,1\nrank 1=n1 slots=2,3\nrank 2=n2 slots=0,1\nrank 3=n2 slots=2,3\n"
    hosts = derive_hosts(env, 4, {"rankfile": rankfile})
    assert hosts == ["n1", "n1", "n2", "n2"]
    lay = resolve_layout(info, hosts, 3)
    assert (lay.local_rank, lay.local_size, lay.node_rank, lay.num_nodes) == (1, 2, 1, 2)


def test_mpich_hydra_hostfile() -> None:
    env = {"PMI_RANK": "2", "PMI_SIZE": "3", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "1"}
    info = launcher_info(env)
    assert (info.kind, info.rank, info.size, info.local_rank, info.local_size) == ("mpich", 2, 3, 0, 1)
    hosts = derive_hosts(env, 3, {"hostfile": "a:2\nb:1\n"})
    assert hosts == ["a", "a", "b"]
    assert resolve_layout(info, hosts, 2).node_rank == 1


def test_openmpi_hostfile_slots() -> None:
    assert parse_hostfile("a slots=2\nb slots=2\n# c\n") == [("a", 2), ("b", 2)]
    assert derive_hosts({}, 4, {"hostfile": "a slots=2\nb slots=2\n"}) == ["a", "a", "b", "b"]


def test_slurm_srun_step() -> None:
    assert expand_slurm_nodelist("nid[001-003,007],login1") == ["nid001", "nid002", "nid003", "nid007", "login1"]
    assert slurm_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    env = {
        "SLURM_PROCID": "5",
        "SLURM_STEP_ID": "0",
        "SLURM_NTASKS": "6",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "2",
        "SLURM_STEP_NODELIST": "gpu[01-03]",
        "SLURM_STEP_TASKS_PER_NODE": "2(x3)",
    }
    info = launcher_info(env)
    assert (info.kind, info.rank, info.size, info.local_rank, info.local_size, info.node_rank) == (
        "slurm",
        5,
        6,
        1,
        2,
        2,
    )
    hosts = derive_hosts(env, 6, {})
    assert hosts == ["gpu01", "gpu01", "gpu02", "gpu02", "gpu03", "gpu03"]
    lay = resolve_layout(info, hosts, 5)
    assert (lay.local_rank, lay.node_rank, lay.num_nodes) == (1, 2, 3)
    # A batch script is not a step: no launcher.
    assert launcher_info({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}).kind == "none"


def test_pals_hostfile_with_ppn() -> None:
    env = {"PALS_RANKID": "5", "PMI_SIZE": "8", "PALS_LOCAL_RANKID": "1", "PALS_LOCAL_SIZE": "4", "PALS_NODEID": "1"}
    info = launcher_info(env)
    assert (info.kind, info.rank, info.size, info.local_rank, info.local_size, info.node_rank) == (
        "pals",
        5,
        8,
        1,
        4,
        1,
    )
    hosts = derive_hosts(env, 8, {"hostfile": "x3000c0s1b0n0\nx3000c0s1b1n0\n"})
    assert hosts == ["x3000c0s1b0n0"] * 4 + ["x3000c0s1b1n0"] * 4
    assert resolve_layout(info, hosts, 5).node_rank == 1
    # PBS node file (one line per slot) as the fallback
    nodefile = "p1\np1\np2\np2\n"
    assert derive_hosts({"PALS_RANKID": "0", "PMI_SIZE": "4"}, 4, {"nodefile": nodefile}) == ["p1", "p1", "p2", "p2"]


def test_flux_variables() -> None:
    env = {"FLUX_TASK_RANK": "3", "FLUX_JOB_SIZE": "4", "FLUX_TASK_LOCAL_ID": "1"}
    info = launcher_info(env)
    assert (info.kind, info.rank, info.size, info.local_rank) == ("flux", 3, 4, 1)
    # Flux writes no rank file: hosts come from the ranks' published addresses.
    assert derive_hosts(env, 4, {}) == []
    lay = resolve_layout(info, ["f0", "f0", "f1", "f1"], 3)
    assert (lay.local_rank, lay.local_size, lay.node_rank, lay.num_nodes) == (1, 2, 1, 2)


def test_layout_and_devices() -> None:
    hosts = ["a", "b", "a", "b"]  # round-robin placement
    assert layout_from_hosts(hosts, 2).local_rank == 1
    assert layout_from_hosts(hosts, 1).node_rank == 1
    assert node_visible_devices(hosts, 2, 1, ["0", "0", "1", "1"]) == "0,1"
    assert node_visible_devices(hosts, 0, 1, [None] * 4) == "0,1"
    assert node_visible_devices(hosts, 0, 0, [None] * 4) == ""
    cfg = json.loads(tf_config(["a:1", "b:2"], 1))
    assert cfg == {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}


def test_the_bootstrap_and_the_core_read_the_same_launcher_table() -> None:
    """deeprc-launch's layout and detect_wiring agree on every MPI launcher (one table, deeprc_core.launchers)."""
    from deeprc_core.launchers import MPI_LAUNCHERS

    from deeprc_core import detect_wiring

    for launcher in MPI_LAUNCHERS:
        env = {launcher.rank[0]: "1", launcher.size[0]: "4"}
        env.update({launcher.local_rank[0]: "1", launcher.local_size[0]: "2"})
        env.update({alt[0]: "0" for alt in launcher.also_needs})
        info, wiring = launcher_info(env), detect_wiring(env)
        assert (info.kind, info.rank, info.size, info.local_rank) == (wiring.source, 1, 4, wiring.local_rank)
