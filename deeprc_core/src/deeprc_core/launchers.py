"""The launcher table: one record per launcher that starts a job's ranks, and what it tells each rank.

Every place that asks "who started this process, and what did it say" reads this table:
:func:`deeprc_core.detect_wiring` (the rank's wiring), the communicator choice (MPI or
not), ``deeprc-launch``'s bootstrap (the layout under RADICAL-Pilot) and deeprc-torch (how
to agree a rendezvous). Adding a launcher is one record here, plus its tests in
``tests/core/test_wiring.py``.

Records, in the order they are tried (a job started by several, e.g. ``srun`` inside a
RADICAL-Pilot task, is named by the first one that matches):

* ``deeprc`` (``deeprc-launch``), ``lightning`` (Lightning's own launcher: ``python train.py``
  with ``Trainer(strategy="ddp", devices=N)`` sets ``LOCAL_RANK``, ``NODE_RANK`` and
  ``WORLD_SIZE`` but no ``RANK``), ``torchrun``, ``radical`` (RADICAL-Pilot's ``RP_RANK``):
  the job launchers, whose own variables come first;
* ``openmpi``, ``pals`` (Cray PALS / ``aprun``), ``flux``, ``mpich`` (MPICH's Hydra, Intel
  MPI), ``slurm`` (an ``srun`` step): the MPI launchers and schedulers, which also fill in
  the local rank and node under a job launcher that does not say them (RADICAL-Pilot).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import env_vars as ev
from .errors import WiringError
from .hostlist import slurm_tasks_per_node

Env = Mapping[str, str]


@dataclass(frozen=True)
class RankVars:
    """What one launcher told one rank (None: not said)."""

    launcher: str
    rank: int | None
    size: int | None
    local_rank: int | None = None
    local_size: int | None = None
    node_rank: int | None = None
    num_nodes: int | None = None
    #: the variable names the rank and size came from (for error messages)
    rank_var: str = ""
    size_var: str = ""


def _read_int(env: Env, names: tuple[str, ...], launcher: str) -> tuple[int | None, str]:
    """The first of ``names`` that is set, as an int, and its name; WiringError names a non-integer."""
    for name in names:
        raw = env.get(name, "")
        if raw != "":
            try:
                return int(raw), name
            except ValueError:
                raise WiringError(f"{launcher}: {name}={raw!r} is not an integer") from None
    return None, names[0] if names else ""


@dataclass(frozen=True)
class Launcher:
    """One launcher: the variables that identify it and those it sets for every rank, in order of preference."""

    name: str
    #: any of these set means this launcher started the rank
    detect_vars: tuple[str, ...]
    rank: tuple[str, ...]
    size: tuple[str, ...]
    local_rank: tuple[str, ...] = ()
    local_size: tuple[str, ...] = ()
    #: the node's index; never a rank *within* the node (Open MPI's OMPI_COMM_WORLD_NODE_RANK is that)
    node_rank: tuple[str, ...] = ()
    num_nodes: tuple[str, ...] = ()
    #: all of these must be set too (an ``srun`` step, not just a batch script inside an allocation)
    also_needs: tuple[tuple[str, ...], ...] = ()
    #: none of these may be set (Lightning's launcher is torchrun's variables without ``RANK``)
    absent: tuple[str, ...] = ()
    #: an MPI launcher: its ranks can form an MPI world (mpi4py) to agree a rendezvous
    mpi: bool = False
    #: SLURM-style lists of tasks per node ("2(x3),1"), read at ``node_rank`` when no local size is set
    tasks_per_node: tuple[str, ...] = ()

    def detect(self, env: Env) -> bool:
        """True when this launcher started the rank whose environment is ``env``."""
        return (
            any(v in env for v in self.detect_vars)
            and all(any(v in env for v in alt) for alt in self.also_needs)
            and not any(v in env for v in self.absent)
        )

    def read(self, env: Env) -> RankVars:
        """The rank's variables as this launcher set them (WiringError for a value that is not an integer)."""
        rank, rank_var = _read_int(env, self.rank, self.name)
        size, size_var = _read_int(env, self.size, self.name)
        local_size, _ = _read_int(env, self.local_size, self.name)
        node_rank, _ = _read_int(env, self.node_rank, self.name)
        if local_size is None and self.tasks_per_node:
            listed = next((env[v] for v in self.tasks_per_node if env.get(v)), "")
            counts = slurm_tasks_per_node(listed)  # "2(x3),1": tasks on each node of the step
            if counts and node_rank is not None and node_rank < len(counts):
                local_size = counts[node_rank]
        return RankVars(
            self.name,
            rank,
            size,
            _read_int(env, self.local_rank, self.name)[0],
            local_size,
            node_rank,
            _read_int(env, self.num_nodes, self.name)[0],
            rank_var,
            size_var,
        )


#: Job launchers: they say the rank and world size (and, some, the rendezvous).
DEEPRC = Launcher(
    "deeprc",
    (ev.RANK,),
    (ev.RANK,),
    (ev.WORLD_SIZE,),
    (ev.LOCAL_RANK,),
    (ev.LOCAL_WORLD_SIZE,),
    (ev.NODE_RANK,),
    (ev.NUM_NODES,),
)
LIGHTNING = Launcher(
    "lightning",  # its subprocess launcher: the rank is NODE_RANK * processes per node + LOCAL_RANK
    ("LOCAL_RANK",),
    ("LOCAL_RANK",),
    ("WORLD_SIZE",),
    ("LOCAL_RANK",),
    (),
    ("NODE_RANK",),
    also_needs=(("WORLD_SIZE",), ("NODE_RANK",)),
    absent=("RANK",),
)
TORCHRUN = Launcher(
    "torchrun",
    ("RANK", "WORLD_SIZE"),
    ("RANK",),
    ("WORLD_SIZE",),
    ("LOCAL_RANK",),
    ("LOCAL_WORLD_SIZE",),
    ("GROUP_RANK", "NODE_RANK"),
    ("GROUP_WORLD_SIZE",),
)
RADICAL = Launcher("radical", ("RP_RANK",), ("RP_RANK",), ("RP_RANKS",))

#: MPI launchers and schedulers (also what sits under a RADICAL-Pilot task).
OPENMPI = Launcher(
    "openmpi",
    ("OMPI_COMM_WORLD_RANK",),
    ("OMPI_COMM_WORLD_RANK",),
    ("OMPI_COMM_WORLD_SIZE",),
    ("OMPI_COMM_WORLD_LOCAL_RANK",),
    ("OMPI_COMM_WORLD_LOCAL_SIZE",),
    mpi=True,  # OMPI_COMM_WORLD_NODE_RANK is deliberately absent: it is a rank within the node
)
PALS = Launcher(
    "pals",
    ("PALS_RANKID",),
    ("PALS_RANKID",),
    ("PMI_SIZE", "PALS_SIZE"),
    ("PALS_LOCAL_RANKID", "PMI_LOCAL_RANK"),
    ("PALS_LOCAL_SIZE", "PMI_LOCAL_SIZE"),
    ("PALS_NODEID",),
    mpi=True,
)
FLUX = Launcher(
    "flux",
    ("FLUX_TASK_RANK",),
    ("FLUX_TASK_RANK",),
    ("FLUX_JOB_SIZE",),
    ("FLUX_TASK_LOCAL_ID",),
    ("FLUX_TASK_LOCAL_SIZE",),
    mpi=True,  # Flux runs MPI jobs through its PMI
)
MPICH = Launcher(
    "mpich",  # MPICH's Hydra (mpiexec.hydra), Intel MPI
    ("PMI_RANK", "MPI_LOCALRANKID"),
    ("PMI_RANK",),
    ("PMI_SIZE",),
    ("MPI_LOCALRANKID",),
    ("MPI_LOCALNRANKS",),
    mpi=True,
)
SLURM = Launcher(
    "slurm",
    ("SLURM_PROCID",),
    ("SLURM_PROCID",),
    ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"),
    ("SLURM_LOCALID",),
    ("SLURM_NTASKS_PER_NODE",),
    ("SLURM_NODEID",),
    ("SLURM_STEP_NUM_NODES", "SLURM_NNODES"),
    also_needs=(("SLURM_STEP_ID", "SLURM_STEPID"),),
    mpi=True,  # srun starts MPI ranks through PMI/PMIx
    tasks_per_node=("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"),
)

JOB_LAUNCHERS: tuple[Launcher, ...] = (DEEPRC, LIGHTNING, TORCHRUN, RADICAL)
MPI_LAUNCHERS: tuple[Launcher, ...] = (OPENMPI, PALS, FLUX, MPICH, SLURM)
#: Every launcher, in the order :func:`detect_wiring` tries them.
LAUNCHERS: tuple[Launcher, ...] = JOB_LAUNCHERS + MPI_LAUNCHERS
BY_NAME = {launcher.name: launcher for launcher in LAUNCHERS}

#: Variables any MPI launcher sets (PMIx included), for "may this process initialise MPI?".
MPI_WORLD_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "PALS_RANKID")


def mpi_launcher(env: Env) -> RankVars | None:
    """What the MPI launcher or scheduler underneath says (the first of :data:`MPI_LAUNCHERS` present), or None."""
    for launcher in MPI_LAUNCHERS:
        if launcher.detect(env):
            return launcher.read(env)
    return None


def launched_by_mpi(env: Env) -> bool:
    """True when an MPI launcher started this process (so mpi4py can join its world)."""
    return any(v in env for v in MPI_WORLD_VARS)


def can_agree_over_mpi(source: str) -> bool:
    """Whether ranks wired by ``source`` (a launcher name) can agree things through MPI."""
    launcher = BY_NAME.get(source)
    return source == "radical" or (launcher is not None and launcher.mpi)
