"""Pure builders of RP pilot and task descriptions (plain dicts), and the ``--dry-run`` preview.

Nothing here imports radical.pilot: :mod:`deeprc_launch.session` turns the dicts into RP
objects. Keeping them pure makes them unit-testable and lets ``--dry-run`` show exactly what
would be submitted. The job itself is declared in :mod:`deeprc_launch.jobspec`.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeprc_core import env_vars as ev

from .jobspec import JobSpec, bootstrap_argv
from .resources import LOCAL_MPI_ENV, LOCAL_RESOURCE, is_local, local_cores, local_gpus, resource_info
from .wiring_derivation import layout_from_hosts, node_visible_devices


def resolve_command(target: str, args: list[str], module: bool = False, python: str | None = None) -> list[str]:
    """The command a rank runs: ``python script.py args``, ``python -m module args`` or ``executable args``."""
    python = python or sys.executable
    if module:
        return [python, "-m", target, *args]
    if target.endswith(".py"):
        return [python, os.path.abspath(target), *args]
    if os.path.sep in target or os.path.exists(target):
        return [os.path.abspath(target), *args]
    return [shutil.which(target) or target, *args]


@dataclass
class PilotSpec:
    """What the pilot should hold."""

    resource: str = LOCAL_RESOURCE
    nodes: int | None = None
    cores: int | None = None
    gpus: int | None = None
    queue: str | None = None
    project: str | None = None
    walltime: float = 60.0  # minutes
    sandbox: str | None = None
    access_schema: str | None = None


def resolve_ranks(ranks: int | None, nodes: int | None, ranks_per_node: int | None) -> int:
    """Total ranks from ``--ranks`` or ``--nodes x --ranks-per-node`` (default 1)."""
    if ranks:
        if nodes and ranks_per_node and ranks != nodes * ranks_per_node:
            raise ValueError(f"--ranks {ranks} contradicts --nodes {nodes} x --ranks-per-node {ranks_per_node}")
        return ranks
    if nodes and ranks_per_node:
        return nodes * ranks_per_node
    return nodes or 1


def pilot_for_job(pilot: PilotSpec, job: JobSpec) -> PilotSpec:
    """Fill in the pilot's size from the job where the user did not say."""
    if is_local(pilot.resource):
        need = job.ranks * job.cores_per_rank
        cores = pilot.cores or max(local_cores(), need)
        gpus = pilot.gpus if pilot.gpus is not None else max(local_gpus(), math.ceil(job.ranks * job.gpus_per_rank))
        return PilotSpec(**{**pilot.__dict__, "cores": cores, "gpus": gpus, "nodes": None})
    if pilot.nodes or pilot.cores:
        return pilot
    info = resource_info(pilot.resource)
    if job.ranks_per_node:
        nodes = math.ceil(job.ranks / job.ranks_per_node)
    elif info and info.cores_per_node:
        by_cores = job.ranks * job.cores_per_rank / info.cores_per_node
        by_gpus = job.ranks * job.gpus_per_rank / info.gpus_per_node if info.gpus_per_node else 0
        nodes = max(1, math.ceil(max(by_cores, by_gpus)))
    else:
        nodes = 1
    return PilotSpec(**{**pilot.__dict__, "nodes": nodes})


def pilot_description(pilot: PilotSpec) -> dict[str, Any]:
    """The RP PilotDescription (as a dict); ``exit_on_error`` off so a failing pilot never kills the client."""
    pd: dict[str, Any] = {
        "resource": pilot.resource,
        "runtime": max(1, int(math.ceil(pilot.walltime))),
        "exit_on_error": False,
    }
    if pilot.nodes:
        pd["nodes"] = pilot.nodes
    else:
        pd["cores"] = pilot.cores or local_cores()
    if pilot.gpus:
        pd["gpus"] = pilot.gpus
    for key in ("queue", "project", "sandbox", "access_schema"):
        value = getattr(pilot, key)
        if value:
            pd[key] = value
    return pd


def task_description(job: JobSpec, resource: str) -> dict[str, Any]:
    """The RP TaskDescription (as a dict) that runs ``job`` through the bootstrap."""
    args = bootstrap_argv(job)
    if is_local(resource):
        args[2:2] = ["--host", "127.0.0.1"]  # one machine: keep every rendezvous on loopback
    td: dict[str, Any] = {
        "name": job.name or job.run_id,
        "executable": job.python,
        "arguments": args,
        "ranks": job.ranks,
        "cores_per_rank": job.cores_per_rank,
        "gpus_per_rank": job.gpus_per_rank,
    }
    if job.ranks_per_node:
        td["ranks_per_node"] = job.ranks_per_node
    # job.timeout travels to the bootstrap (bootstrap_argv), which stops the ranks itself: RP's
    # own task timeout makes its executor poll without sleeping, a whole CPU, while the task runs.
    if is_local(resource):
        td["environment"] = dict(LOCAL_MPI_ENV)
        # mpirun itself (launch script) needs them too, not only the ranks.
        td["pre_launch"] = [f"export {k}={v}" for k, v in LOCAL_MPI_ENV.items()]
    return td


def preview_hosts(job: JobSpec, pilot: PilotSpec) -> list[str]:
    """Hosts by rank a job would get (block placement): ``localhost`` locally, ``node0..`` on a cluster."""
    if is_local(pilot.resource):
        return ["127.0.0.1"] * job.ranks
    nodes = pilot.nodes or 1
    per_node = job.ranks_per_node or math.ceil(job.ranks / nodes)
    return [f"<node{r // per_node}>" for r in range(job.ranks)]


def preview_rank_envs(job: JobSpec, pilot: PilotSpec) -> list[dict[str, str]]:
    """The variables each rank would get (ports are agreed at run time; shown as placeholders)."""
    from .rank_env import build_rank_env

    hosts = preview_hosts(job, pilot)
    envs = []
    for rank in range(job.ranks):
        env = build_rank_env(
            rank=rank,
            hosts=hosts,
            layout=layout_from_hosts(hosts, rank),
            master_port=0,
            worker_ports=[0] * job.ranks,
            backend=job.backend,
            framework=job.framework,
            gpus_per_rank=job.gpus_per_rank,
            visible_devices=None
            if "CUDA_VISIBLE_DEVICES" in job.env
            else node_visible_devices(hosts, rank, job.gpus_per_rank, [None] * job.ranks),
            run_id=job.run_id,
            log_dir=job.run_dir,
            job_secret="<generated per job by rank 0's bootstrap>",
        )
        env.update(job.env)
        envs.append({k: v.replace(":0", ":<port>") if k == "TF_CONFIG" else v for k, v in env.items()})
        for key in ("MASTER_PORT", ev.MASTER_PORT):
            if key in envs[-1]:
                envs[-1][key] = "<agreed at run time>"
    return envs


def default_run_dir(run_id: str) -> str:
    """Where a run's per-rank logs go: ``$DEEPRC_HOME/runs/<run id>``."""
    from .resources import deeprc_home

    return str(Path(deeprc_home()) / "runs" / run_id)
