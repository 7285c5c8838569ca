"""Pure derivation of hosts, local ranks and node ranks from launcher variables and rank files.

RADICAL-Pilot gives every rank only ``RP_RANK``/``RP_RANKS``. Everything else a framework needs
(local rank, node rank, the host of rank 0, every rank's host) comes from the MPI launcher or
scheduler underneath (Open MPI, MPICH/Hydra, SLURM ``srun``, Cray PALS, Flux) and from the rank
or host file RP writes into the task sandbox. The functions here only read what they are given
(an environment mapping and file texts) so that they can be unit-tested with fabricated inputs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from deeprc_core.hostlist import expand_slurm_nodelist, slurm_tasks_per_node
from deeprc_core.launchers import mpi_launcher

Env = Mapping[str, str]

#: Choices of ``--framework`` (``--backend``'s are the core's :data:`deeprc_core.wiring.BACKENDS`).
FRAMEWORKS = ("auto", "torch", "tf", "none")


@dataclass(frozen=True)
class LauncherInfo:
    """What the launcher underneath tells one rank about itself (None: not said); ``kind`` is its name in
    :mod:`deeprc_core.launchers` (``openmpi``, ``pals``, ``flux``, ``mpich``, ``slurm``) or ``none``."""

    kind: str
    rank: int | None = None
    size: int | None = None
    local_rank: int | None = None
    local_size: int | None = None
    node_rank: int | None = None


def launcher_info(env: Env) -> LauncherInfo:
    """What the MPI launcher or scheduler underneath says about this rank (the core's launcher table)."""
    said = mpi_launcher(env)
    if said is None:
        return LauncherInfo("none")
    return LauncherInfo(said.launcher, said.rank, said.size, said.local_rank, said.local_size, said.node_rank)


def parse_rankfile(text: str) -> list[str]:
    """Hosts by rank from an Open MPI rank file (``rank 0=node1 slots=0,1``), as RP's MPIEXEC writes."""
    entries: dict[int, str] = {}
    for line in text.splitlines():
        m = re.match(r"\s*rank\s+(\d+)\s*=\s*(\S+)", line)
        if m:
            entries[int(m.group(1))] = m.group(2)
    return [entries[r] for r in range(len(entries))] if set(entries) == set(range(len(entries))) else []


def parse_hostfile(text: str) -> list[tuple[str, int | None]]:
    """``(host, slots)`` pairs from a host file: ``host``, ``host slots=N`` (Open MPI) or ``host:N`` (Hydra)."""
    entries: list[tuple[str, int | None]] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"(\S+?)(?::(\d+)|\s+slots\s*=\s*(\d+).*)?", line)
        if not m:
            continue
        slots = m.group(2) or m.group(3)
        entries.append((m.group(1), int(slots) if slots else None))
    return entries


def hosts_from_hostfile(entries: Sequence[tuple[str, int | None]], world: int, ppn: int | None = None) -> list[str]:
    """Hosts by rank for ranks placed block-wise over a host file (the placement RP asks for).

    Entries without a slot count get ``ppn`` ranks (or an even share of ``world``). A plain
    host file that lists one line per rank (repeats) is taken as is.
    """
    if not entries:
        return []
    if all(s is None for _, s in entries) and len(entries) == world:
        return [h for h, _ in entries]
    share = ppn or math.ceil(world / len(entries))
    hosts: list[str] = []
    for host, slots in entries:
        hosts.extend([host] * (slots if slots is not None else share))
    return hosts[:world] if len(hosts) >= world else []


def slurm_hosts(env: Env, world: int) -> list[str]:
    """Hosts by rank inside an ``srun`` step (block distribution over the step's node list)."""
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "")
    per_node = slurm_tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", ""))
    nodes = expand_slurm_nodelist(nodelist) if nodelist else []
    if not nodes:
        return []
    if not per_node:
        per_node = [math.ceil(world / len(nodes))] * len(nodes)
    if len(per_node) == 1 and len(nodes) > 1:
        per_node = per_node * len(nodes)
    hosts = [h for h, n in zip(nodes, per_node, strict=False) for _ in range(n)]
    return hosts[:world] if len(hosts) >= world else []


def derive_hosts(env: Env, world: int, files: Mapping[str, str]) -> list[str]:
    """Hosts by rank from what the job can see, or ``[]`` when nothing says.

    ``files`` maps file kinds to their text: ``"rankfile"`` (RP's ``<task>.rf``),
    ``"hostfile"`` (RP's ``<task>.hf``, also the PALS host file) and ``"nodefile"``
    (``$PBS_NODEFILE``). Order: an explicit ``DEEPRC_HOSTS``-style list in ``files["hosts"]``,
    the rank file, the host file, SLURM's step variables, then the PBS node file (PALS).
    """
    if files.get("hosts"):
        hosts = [h for h in files["hosts"].split(",") if h]
        if len(hosts) == world:
            return hosts
    if files.get("rankfile"):
        hosts = parse_rankfile(files["rankfile"])
        if len(hosts) == world:
            return hosts
    info = launcher_info(env)
    ppn = info.local_size if info.kind == "pals" else None
    if files.get("hostfile"):
        hosts = hosts_from_hostfile(parse_hostfile(files["hostfile"]), world, ppn)
        if hosts:
            return hosts
    if info.kind == "slurm":
        hosts = slurm_hosts(env, world)
        if hosts:
            return hosts
    if files.get("nodefile"):
        # PBS lists a node once per slot or once per node; collapse repeats and place block-wise.
        nodes = list(dict.fromkeys(h for h, _ in parse_hostfile(files["nodefile"])))
        hosts = hosts_from_hostfile([(n, None) for n in nodes], world, ppn)
        if hosts:
            return hosts
    return []


@dataclass(frozen=True)
class Layout:
    """Where one rank sits, derived from every rank's host."""

    local_rank: int
    local_size: int
    node_rank: int
    num_nodes: int


def layout_from_hosts(hosts: Sequence[str], rank: int) -> Layout:
    """Local rank/size and node rank of ``rank``; nodes are numbered in order of first appearance."""
    nodes = list(dict.fromkeys(hosts))
    mine = hosts[rank]
    local_rank = sum(1 for h in hosts[:rank] if h == mine)
    return Layout(local_rank, sum(1 for h in hosts if h == mine), nodes.index(mine), len(nodes))


def resolve_layout(info: LauncherInfo, hosts: Sequence[str], rank: int) -> Layout:
    """The launcher's own local rank/size where it gives them, else what the hosts imply."""
    derived = layout_from_hosts(hosts, rank)
    local_rank = info.local_rank if info.local_rank is not None else derived.local_rank
    local_size = info.local_size if info.local_size is not None else derived.local_size
    if not 0 <= local_rank < local_size:
        local_rank, local_size = derived.local_rank, derived.local_size
    return Layout(local_rank, local_size, derived.node_rank, derived.num_nodes)


def tf_config(workers: Sequence[str], index: int) -> str:
    """TF_CONFIG for a MultiWorkerMirroredStrategy worker: every worker's own ``host:port``."""
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})


def node_visible_devices(
    hosts: Sequence[str], rank: int, gpus_per_rank: float, per_rank_devices: Sequence[str | None]
) -> str:
    """CUDA_VISIBLE_DEVICES for ``rank``: the devices of every rank on its node, in local-rank order.

    That keeps torchrun's convention (each rank uses device ``LOCAL_RANK * gpus_per_rank`` of
    what it sees) while honouring the devices the pilot assigned. ``per_rank_devices`` holds
    what the pilot set for each rank (None: nothing); without it devices are numbered from 0.
    ``gpus_per_rank == 0`` hides every GPU.
    """
    if gpus_per_rank <= 0:
        return ""
    mine = hosts[rank]
    on_node = [r for r, h in enumerate(hosts) if h == mine]
    if all(per_rank_devices[r] for r in on_node):
        devices: list[str] = []
        for r in on_node:
            for d in str(per_rank_devices[r]).split(","):
                if d and d not in devices:
                    devices.append(d)
        return ",".join(devices)
    count = max(1, math.ceil(gpus_per_rank * len(on_node)))
    return ",".join(str(i) for i in range(count))
