"""Which rank am I? One reader for every launcher's environment variables.

:func:`detect_wiring` looks at the sources below, in this order, and the first one
whose variables are present wins:

1. ``deeprc``   deeprc-launch's own DEEPRC_* variables (see :mod:`deeprc_core.env_vars`)
2. ``torchrun`` RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR/PORT
3. ``radical``  RP_RANK, RP_RANKS (local rank from the MPI launcher underneath, if any)
4. ``openmpi``  OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK/LOCAL_SIZE
5. ``pals``     Cray PALS: PALS_RANKID, PALS_LOCAL_RANKID, PALS_NODEID (+ PMI_SIZE)
6. ``mpich``    MPICH/Hydra: PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS
7. ``slurm``    srun steps: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID
   (only inside an ``srun`` step, i.e. with SLURM_STEP_ID set: a batch script itself
   is one process even though SLURM_NTASKS says otherwise). Without MASTER_ADDR/PORT
   the rendezvous is the step's first node and a port every task derives alike from
   the job and step ids (``SLURM_STEP_RESV_PORTS`` first, when SLURM reserved some)
8. ``single``   rank 0 of 1

Variables that contradict each other raise :class:`~deeprc_core.errors.WiringError`
naming them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from . import env_vars as ev
from .errors import WiringError
from .hostlist import expand_slurm_nodelist, slurm_tasks_per_node


@dataclass(frozen=True)
class Wiring:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    num_nodes: int = 1
    master_addr: str | None = None
    master_port: int | None = None
    source: str = "single"
    hosts: tuple[str, ...] | None = None

    @property
    def is_distributed(self) -> bool:
        """True when the job has more than one rank."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on global rank 0."""
        return self.rank == 0

    def as_env(self) -> dict[str, str]:
        """The DEEPRC_* variables that reproduce this wiring (what the launcher sets)."""
        env = {
            ev.RANK: str(self.rank),
            ev.WORLD_SIZE: str(self.world_size),
            ev.LOCAL_RANK: str(self.local_rank),
            ev.LOCAL_WORLD_SIZE: str(self.local_world_size),
            ev.NODE_RANK: str(self.node_rank),
            ev.NUM_NODES: str(self.num_nodes),
        }
        if self.master_addr:
            env[ev.MASTER_ADDR] = self.master_addr
        if self.master_port is not None:
            env[ev.MASTER_PORT] = str(self.master_port)
        if self.hosts:
            env[ev.HOSTS] = ",".join(self.hosts)
        return env


Env = Mapping[str, str]


def _int(env: Env, name: str, source: str) -> int:
    raw = env[name]
    try:
        return int(raw)
    except ValueError:
        raise WiringError(f"{source}: {name}={raw!r} is not an integer") from None


def _opt_int(env: Env, names: tuple[str, ...], source: str) -> int | None:
    for name in names:
        if env.get(name, "") != "":
            return _int(env, name, source)
    return None


def _need(env: Env, have: str, need: str, source: str) -> None:
    if env.get(need, "") == "":
        raise WiringError(f"{source}: {have} is set but {need} is missing; set both or neither")


def _master(env: Env) -> tuple[str | None, int | None]:
    addr = env.get("MASTER_ADDR") or env.get(ev.MASTER_ADDR) or None
    port_raw = env.get("MASTER_PORT") or env.get(ev.MASTER_PORT)
    port = None
    if port_raw:
        try:
            port = int(port_raw)
        except ValueError:
            raise WiringError(f"MASTER_PORT={port_raw!r} is not an integer") from None
    return addr, port


def _local_from_launchers(env: Env) -> tuple[int | None, int | None]:
    """Local rank/size from whichever MPI launcher or scheduler is underneath."""
    pairs = (
        ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
        ("PALS_LOCAL_RANKID", "PALS_LOCAL_SIZE"),
        ("MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
        ("FLUX_TASK_LOCAL_ID", "FLUX_TASK_LOCAL_SIZE"),
        ("SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
    )
    for rank_var, size_var in pairs:
        if env.get(rank_var, "") != "":
            lr = _int(env, rank_var, rank_var)
            ls = _int(env, size_var, size_var) if env.get(size_var, "").isdigit() else None
            return lr, ls
    return None, None


def _finish(
    source: str,
    rank: int,
    world: int,
    rank_var: str,
    world_var: str,
    env: Env,
    local_rank: int | None = None,
    local_world: int | None = None,
    node_rank: int | None = None,
    num_nodes: int | None = None,
) -> Wiring:
    if world < 1:
        raise WiringError(f"{source}: {world_var}={world} must be at least 1")
    if not 0 <= rank < world:
        raise WiringError(f"{source}: {rank_var}={rank} is not in [0, {world_var}={world})")
    if local_rank is None:
        local_rank, local_world = (0, 1) if world == 1 else (None, local_world)
    if local_world is None:
        # Unknown: assume one node when nothing says otherwise; with N nodes, ceil(world / N) per node.
        local_world = world if num_nodes in (None, 1) else max(1, math.ceil(world / num_nodes))
        if local_rank is not None and local_rank >= local_world:
            local_world = local_rank + 1
    if local_rank is None:
        local_rank = rank % local_world
    if not 0 <= local_rank < local_world:
        raise WiringError(f"{source}: local rank {local_rank} is not in [0, local world size {local_world})")
    if local_world > world:
        raise WiringError(f"{source}: local world size {local_world} exceeds {world_var}={world}")
    if num_nodes is None:
        # A launcher that names the node index but not the node count: at least node_rank + 1 nodes.
        num_nodes = max(1, math.ceil(world / local_world), (node_rank or 0) + 1)
    if node_rank is None:
        node_rank = rank // local_world if num_nodes > 1 else 0
    if not 0 <= node_rank < num_nodes:
        raise WiringError(f"{source}: node rank {node_rank} is not in [0, number of nodes {num_nodes})")
    addr, port = _master(env)
    hosts_raw = env.get(ev.HOSTS, "")
    hosts = tuple(h for h in hosts_raw.split(",") if h) or None
    if hosts is not None and len(hosts) != world:
        raise WiringError(f"{source}: {ev.HOSTS} lists {len(hosts)} hosts for {world_var}={world} ranks")
    if addr is None and num_nodes == 1:
        addr = "127.0.0.1"
    if addr is None and hosts:
        addr = hosts[0]
    return Wiring(rank, world, local_rank, local_world, node_rank, num_nodes, addr, port, source, hosts)


def _from_deeprc(env: Env) -> Wiring | None:
    if ev.RANK not in env:
        return None
    _need(env, ev.RANK, ev.WORLD_SIZE, "deeprc")
    return _finish(
        "deeprc",
        _int(env, ev.RANK, "deeprc"),
        _int(env, ev.WORLD_SIZE, "deeprc"),
        ev.RANK,
        ev.WORLD_SIZE,
        {**env, "MASTER_ADDR": env.get(ev.MASTER_ADDR, ""), "MASTER_PORT": env.get(ev.MASTER_PORT, "")},
        _opt_int(env, (ev.LOCAL_RANK,), "deeprc"),
        _opt_int(env, (ev.LOCAL_WORLD_SIZE,), "deeprc"),
        _opt_int(env, (ev.NODE_RANK,), "deeprc"),
        _opt_int(env, (ev.NUM_NODES,), "deeprc"),
    )


def _from_torchrun(env: Env) -> Wiring | None:
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return None
    _need(env, "RANK", "WORLD_SIZE", "torchrun")
    _need(env, "WORLD_SIZE", "RANK", "torchrun")
    world = _int(env, "WORLD_SIZE", "torchrun")
    local_world = _opt_int(env, ("LOCAL_WORLD_SIZE",), "torchrun")
    num_nodes = _opt_int(env, ("GROUP_WORLD_SIZE",), "torchrun")
    if num_nodes is None and local_world:
        num_nodes = max(1, math.ceil(world / local_world))
    return _finish(
        "torchrun",
        _int(env, "RANK", "torchrun"),
        world,
        "RANK",
        "WORLD_SIZE",
        env,
        _opt_int(env, ("LOCAL_RANK",), "torchrun"),
        local_world,
        _opt_int(env, ("GROUP_RANK", "NODE_RANK"), "torchrun"),
        num_nodes,
    )


def _from_radical(env: Env) -> Wiring | None:
    if "RP_RANK" not in env:
        return None
    _need(env, "RP_RANK", "RP_RANKS", "radical")
    local_rank, local_world = _local_from_launchers(env)
    return _finish(
        "radical",
        _int(env, "RP_RANK", "radical"),
        _int(env, "RP_RANKS", "radical"),
        "RP_RANK",
        "RP_RANKS",
        env,
        local_rank,
        local_world,
    )


def _from_openmpi(env: Env) -> Wiring | None:
    if "OMPI_COMM_WORLD_RANK" not in env:
        return None
    src = "openmpi"
    _need(env, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", src)
    return _finish(
        src,
        _int(env, "OMPI_COMM_WORLD_RANK", src),
        _int(env, "OMPI_COMM_WORLD_SIZE", src),
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        env,
        _opt_int(env, ("OMPI_COMM_WORLD_LOCAL_RANK",), src),
        _opt_int(env, ("OMPI_COMM_WORLD_LOCAL_SIZE",), src),
        # OMPI_COMM_WORLD_NODE_RANK is a rank *within* the node, not the node's index:
        # the node index follows from block placement (rank // local size).
    )


def _from_pals(env: Env) -> Wiring | None:
    if "PALS_RANKID" not in env:
        return None
    src = "pals"
    size_var = "PMI_SIZE" if "PMI_SIZE" in env else "PALS_SIZE"
    _need(env, "PALS_RANKID", size_var, src)
    return _finish(
        src,
        _int(env, "PALS_RANKID", src),
        _int(env, size_var, src),
        "PALS_RANKID",
        size_var,
        env,
        _opt_int(env, ("PALS_LOCAL_RANKID", "PMI_LOCAL_RANK"), src),
        _opt_int(env, ("PALS_LOCAL_SIZE", "PMI_LOCAL_SIZE"), src),
        _opt_int(env, ("PALS_NODEID",), src),
    )


def _from_mpich(env: Env) -> Wiring | None:
    if "PMI_RANK" not in env:
        return None
    src = "mpich"
    _need(env, "PMI_RANK", "PMI_SIZE", src)
    return _finish(
        src,
        _int(env, "PMI_RANK", src),
        _int(env, "PMI_SIZE", src),
        "PMI_RANK",
        "PMI_SIZE",
        env,
        _opt_int(env, ("MPI_LOCALRANKID",), src),
        _opt_int(env, ("MPI_LOCALNRANKS",), src),
    )


def _slurm_port(env: Env) -> str:
    """A port every task of an srun step computes alike: the first reserved port, else one from the job id."""
    reserved = env.get("SLURM_STEP_RESV_PORTS", "")
    if reserved[:1].isdigit():
        return reserved.split("-")[0].split(",")[0]
    job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID", "0")
    step = env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID", "0")
    seed = (int(job) if job.isdigit() else 0) * 7 + (int(step) if step.isdigit() else 0)
    return str(SLURM_PORT_BASE + 2 * (seed % SLURM_PORT_SPAN))  # even: the TCP communicator takes port + 1


#: srun steps without MASTER_PORT rendezvous on SLURM_PORT_BASE + 2 * ((7 * job id + step id) % SLURM_PORT_SPAN).
SLURM_PORT_BASE = 20000
SLURM_PORT_SPAN = 10000


def _from_slurm(env: Env) -> Wiring | None:
    if "SLURM_PROCID" not in env or ("SLURM_STEP_ID" not in env and "SLURM_STEPID" not in env):
        return None
    src = "slurm"
    _need(env, "SLURM_PROCID", "SLURM_NTASKS", src)
    node_rank = _opt_int(env, ("SLURM_NODEID",), src)
    local_world = None
    per_node = env.get("SLURM_NTASKS_PER_NODE", "")
    counts = slurm_tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", ""))
    if per_node.isdigit():
        local_world = int(per_node)
    elif counts and node_rank is not None and node_rank < len(counts):
        local_world = counts[node_rank]
    # Rank 0 runs on the first node of the step (block distribution): that is the rendezvous host.
    nodes = expand_slurm_nodelist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", ""))
    env = {
        **env,
        "MASTER_ADDR": env.get("MASTER_ADDR") or (nodes[0] if nodes else ""),
        "MASTER_PORT": env.get("MASTER_PORT") or _slurm_port(env),
    }
    return _finish(
        src,
        _int(env, "SLURM_PROCID", src),
        _int(env, "SLURM_NTASKS", src),
        "SLURM_PROCID",
        "SLURM_NTASKS",
        env,
        _opt_int(env, ("SLURM_LOCALID",), src),
        local_world,
        node_rank,
        _opt_int(env, ("SLURM_STEP_NUM_NODES", "SLURM_NNODES"), src),
    )


#: The sources in the order :func:`detect_wiring` tries them.
SOURCES: tuple[tuple[str, Callable[[Env], Wiring | None]], ...] = (
    ("deeprc", _from_deeprc),
    ("torchrun", _from_torchrun),
    ("radical", _from_radical),
    ("openmpi", _from_openmpi),
    ("pals", _from_pals),
    ("mpich", _from_mpich),
    ("slurm", _from_slurm),
)


def detect_wiring(environ: Mapping[str, str] | None = None) -> Wiring:
    """Read this process's rank, world size, local rank, node and rendezvous address.

    ``environ`` defaults to ``os.environ``. Returns rank 0 of 1 when no launcher
    variables are present.
    """
    env = os.environ if environ is None else environ
    for _name, reader in SOURCES:
        wiring = reader(env)
        if wiring is not None:
            return wiring
    return replace(Wiring(0, 1), master_addr="127.0.0.1", source="single")


#: Values of DEEPRC_BACKEND (``deeprc-launch --backend``); ``auto`` is the same as unset.
BACKENDS = ("auto", "nccl", "gloo", "mpi")


def requested_backend(environ: Mapping[str, str] | None = None) -> str | None:
    """The backend the launcher asked for (``DEEPRC_BACKEND``: nccl, gloo or mpi), None for auto/unset.

    Raises WiringError for a value that is none of them.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ev.BACKEND, "").strip().lower()
    if raw in ("", "auto"):
        return None
    if raw not in BACKENDS:
        raise WiringError(f"{ev.BACKEND}={raw!r} is not a backend; choose one of {', '.join(BACKENDS)}")
    return raw
