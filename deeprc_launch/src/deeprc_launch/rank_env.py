"""The environment one rank gets: DEEPRC_* plus the conventional torch and TensorFlow variables.

Pure: used by the in-task bootstrap (with the hosts and ports the ranks agreed on) and by
``--dry-run`` (with the hosts and ports a job would get).
"""

from __future__ import annotations

from collections.abc import Sequence

from deeprc_core.wiring import Wiring, resolve_backend

from deeprc_core import env_vars as ev

from .wiring_derivation import FRAMEWORKS, Layout, tf_config


def build_rank_env(
    *,
    rank: int,
    hosts: Sequence[str],
    layout: Layout,
    master_port: int,
    worker_ports: Sequence[int] | None,
    backend: str,
    framework: str,
    gpus_per_rank: float,
    visible_devices: str | None,
    run_id: str,
    log_dir: str,
    comm_timeout: float | None = None,
    job_secret: str | None = None,
) -> dict[str, str]:
    """Every variable the bootstrap sets for ``rank`` before it starts the user's command.

    ``worker_ports`` (one per rank, on that rank's host) is needed for TF_CONFIG; with None
    no TF_CONFIG is set. ``visible_devices`` None leaves CUDA_VISIBLE_DEVICES alone.
    ``job_secret`` (the same on every rank of a job) authenticates the TCP communicator's ranks.
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, not {framework!r}")
    world = len(hosts)
    wiring = Wiring(
        rank=rank,
        world_size=world,
        local_rank=layout.local_rank,
        local_world_size=layout.local_size,
        node_rank=layout.node_rank,
        num_nodes=layout.num_nodes,
        master_addr=hosts[0],
        master_port=master_port,
        source="deeprc",
        hosts=tuple(hosts),
    )
    backend = resolve_backend(backend, has_gpu=gpus_per_rank > 0)  # the GPUs the job asks each rank for
    env = wiring.as_env()
    env[ev.BACKEND] = backend
    env[ev.RUN_ID] = run_id
    env[ev.LOG_DIR] = log_dir
    if backend == "mpi":
        env[ev.COMM] = "mpi"
    if comm_timeout is not None:
        env[ev.COMM_TIMEOUT] = f"{comm_timeout:g}"
    if job_secret is not None:
        env[ev.JOB_SECRET] = job_secret
    if framework in ("auto", "torch"):
        env.update(
            RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_RANK=str(layout.local_rank),
            LOCAL_WORLD_SIZE=str(layout.local_size),
            NODE_RANK=str(layout.node_rank),
            GROUP_RANK=str(layout.node_rank),
            GROUP_WORLD_SIZE=str(layout.num_nodes),
            MASTER_ADDR=hosts[0],
            MASTER_PORT=str(master_port),
        )
    else:
        env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(layout.local_rank))
        env.update(LOCAL_WORLD_SIZE=str(layout.local_size), NODE_RANK=str(layout.node_rank))
    if framework in ("auto", "tf") and worker_ports is not None:
        env["TF_CONFIG"] = tf_config([f"{h}:{p}" for h, p in zip(hosts, worker_ports, strict=True)], rank)
    if visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible_devices
    return env
