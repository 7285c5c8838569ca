"""Which rank am I? One reader for every launcher's environment variables.

:func:`detect_wiring` reads the launcher table (:mod:`deeprc_core.launchers`), in its
order, and the first launcher whose variables are present wins: ``deeprc``
(deeprc-launch's DEEPRC_* variables), ``lightning`` (Lightning's own launcher), ``torchrun``, ``radical`` (RP_RANK/RP_RANKS, the
local rank from the MPI launcher underneath), ``openmpi``, ``pals``, ``flux``, ``mpich``
(Hydra), ``slurm`` (only inside an ``srun`` step, i.e. with SLURM_STEP_ID set: a batch
script itself is one process even though SLURM_NTASKS says otherwise; without
MASTER_ADDR/PORT the rendezvous is the step's first node and a port every task derives
alike from the job and step ids, ``SLURM_STEP_RESV_PORTS`` first), else ``single``
(rank 0 of 1). Adding a launcher is one record in that table.

Variables that contradict each other raise :class:`~deeprc_core.errors.WiringError`
naming them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from . import env_vars as ev
from .errors import WiringError
from .hostlist import expand_slurm_nodelist
from .launchers import DEEPRC, LAUNCHERS, LIGHTNING, RADICAL, SLURM, TORCHRUN, Launcher, mpi_launcher


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


def _from_launcher(launcher: Launcher, env: Env) -> Wiring | None:
    """The wiring ``launcher`` gives this rank, or None when it did not start it."""
    if not launcher.detect(env):
        return None
    v = launcher.read(env)
    if v.rank is None or v.size is None:
        have, missing = (v.rank_var, launcher.size) if v.size is None else (v.size_var, launcher.rank)
        raise WiringError(f"{launcher.name}: {have} is set but {' or '.join(missing)} is missing; set both or neither")
    local_rank, local_world, node_rank, num_nodes = v.local_rank, v.local_size, v.node_rank, v.num_nodes
    if launcher is RADICAL:  # RP says only the rank: the MPI launcher underneath says where it sits
        under = mpi_launcher(env)
        if under is not None:
            local_rank, local_world = under.local_rank, under.local_size
    elif launcher is TORCHRUN and num_nodes is None and local_world:
        num_nodes = max(1, math.ceil(v.size / local_world))
    elif launcher is LIGHTNING and node_rank:
        # Its variables do not say how many processes each node runs, so a rank beyond node 0 is unknown here.
        raise WiringError(
            f"lightning: NODE_RANK={node_rank} under Lightning's own launcher does not say the processes per node; "
            "DeepRCDataModule reads the rank from the Trainer, elsewhere start the job with torchrun or srun"
        )
    if launcher is DEEPRC:
        env = {**env, "MASTER_ADDR": env.get(ev.MASTER_ADDR, ""), "MASTER_PORT": env.get(ev.MASTER_PORT, "")}
    elif launcher is SLURM:
        # Rank 0 runs on the first node of the step (block distribution): that is the rendezvous host.
        nodes = expand_slurm_nodelist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", ""))
        env = {
            **env,
            "MASTER_ADDR": env.get("MASTER_ADDR") or (nodes[0] if nodes else ""),
            "MASTER_PORT": env.get("MASTER_PORT") or _slurm_port(env),
        }
    return _finish(
        launcher.name, v.rank, v.size, v.rank_var, v.size_var, env, local_rank, local_world, node_rank, num_nodes
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


def detect_wiring(environ: Mapping[str, str] | None = None) -> Wiring:
    """Read this process's rank, world size, local rank, node and rendezvous address.

    ``environ`` defaults to ``os.environ``. Returns rank 0 of 1 when no launcher
    variables are present.
    """
    env = os.environ if environ is None else environ
    for launcher in LAUNCHERS:
        wiring = _from_launcher(launcher, env)
        if wiring is not None:
            return wiring
    return replace(Wiring(0, 1), master_addr="127.0.0.1", source="single")


#: Values of DEEPRC_BACKEND (``deeprc-launch --backend``); ``auto`` is the same as unset.
#: The one list: the launcher's ``--backend`` choices and every adapter's check come from it.
BACKENDS = ("auto", "nccl", "gloo", "mpi")


def resolve_backend(requested: str | None, has_gpu: bool) -> str:
    """The backend a job's ranks use: ``requested`` (nccl, gloo or mpi) as it is, and ``auto``
    (or None, or empty) as nccl when ``has_gpu``, else gloo.

    The caller answers ``has_gpu`` (the core imports no framework): torch from its device,
    TensorFlow from its device list, the launcher from ``--gpus-per-rank``. What a framework does
    with the result (torch without MPI falls back to gloo, TF maps it to NCCL or RING) stays in
    its adapter. Raises WiringError for a value that is not in :data:`BACKENDS`.
    """
    raw = (requested or "auto").strip().lower()
    if raw not in BACKENDS:
        raise WiringError(f"backend {requested!r} is not a backend; choose one of {', '.join(BACKENDS)}")
    if raw == "auto":
        return "nccl" if has_gpu else "gloo"
    return raw


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
