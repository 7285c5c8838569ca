"""Process-group setup from the core's wiring, for plain PyTorch loops and the Lightning classes.

The rendezvous address and port come from the wiring (MASTER_ADDR/PORT or DEEPRC_*).
Under ``mpirun`` or ``srun`` neither may be set: then rank 0's host name and a free port
are broadcast once through the core's communicator (MPI), so the same script runs under
every launcher without extra flags.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import torch
import torch.distributed as dist
from deeprc_core.comm.base import default_timeout
from deeprc_core.launchers import can_agree_over_mpi
from deeprc_core.network import apply_socket_ifname, free_port, host_address
from deeprc_core.wiring import requested_backend, resolve_backend

from deeprc_core import Wiring, WiringError, detect_wiring, env_vars, get_communicator

log = logging.getLogger(__name__)

#: Default process-group timeout: long enough for slow steps, short enough to notice a dead rank.
DEFAULT_PG_TIMEOUT = timedelta(seconds=env_vars.DEFAULT_COMM_TIMEOUT)

_resolved: dict[str, tuple[str, int]] = {}


def pg_timeout(timeout: float | timedelta | None = None) -> timedelta:
    """``timeout`` as a timedelta; None means DEEPRC_COMM_TIMEOUT when set, else 5 minutes."""
    if isinstance(timeout, timedelta):
        return timeout
    if timeout is not None:
        return timedelta(seconds=float(timeout))
    return timedelta(seconds=default_timeout())  # the core's one reader: a bad value names the variable


def rendezvous(wiring: Wiring | None = None) -> tuple[str, int]:
    """(address, port) of rank 0 for ``init_process_group``; collective when the launcher gave none."""
    wiring = detect_wiring() if wiring is None else wiring
    key = f"{wiring.source}:{wiring.rank}/{wiring.world_size}"
    if key in _resolved:
        return _resolved[key]
    addr, port = wiring.master_addr, wiring.master_port
    if wiring.world_size > 1 and (addr is None or port is None):
        if not can_agree_over_mpi(wiring.source):
            raise WiringError(
                f"{wiring.source}: no rendezvous address/port for {wiring.world_size} ranks; "
                "set MASTER_ADDR and MASTER_PORT (deeprc-launch and torchrun do)"
            )
        try:  # rank 0 chooses; MPI carries it (the TCP communicator would itself need the port)
            comm = get_communicator(wiring)
            addr, port = comm.bcast((addr or host_address(), port or free_port()) if wiring.rank == 0 else None)
        except Exception as exc:
            raise WiringError(
                f"{wiring.source}: MASTER_ADDR/MASTER_PORT are not set and could not be agreed through MPI ({exc}); "
                "set them (e.g. mpirun -x MASTER_ADDR=<host of rank 0> -x MASTER_PORT=29500) or install mpi4py"
            ) from exc
    result = (addr or "127.0.0.1", int(port or 29500))
    _resolved[key] = result
    return result


def default_backend(device: torch.device | str | None = None) -> str:
    """The process-group backend: what the launcher asked for (``DEEPRC_BACKEND``), else
    ``nccl`` for CUDA devices and ``gloo`` otherwise.

    ``DEEPRC_BACKEND=nccl`` on a rank without a GPU raises at once (NCCL would fail later
    and less clearly); ``mpi`` uses torch's MPI backend when torch has one, else gloo for
    torch while the core's collectives go through MPI.
    """
    asked = requested_backend()
    if asked == "nccl" and not torch.cuda.is_available():
        raise RuntimeError(
            f"{env_vars.BACKEND}=nccl (deeprc-launch --backend nccl) but this rank sees no CUDA GPU; "
            "use --backend gloo (or auto) on CPU nodes, or give every rank a GPU"
        )
    has_gpu = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    backend = resolve_backend(asked, has_gpu)  # the core's one resolution of auto
    if backend == "mpi" and not dist.is_mpi_available():
        log.warning(
            "%s=mpi: this torch has no MPI backend; torch.distributed uses gloo, the core's collectives MPI",
            env_vars.BACKEND,
        )
        return "gloo"
    return backend


def init_process_group(
    backend: str | None = None, timeout: float | timedelta | None = None, wiring: Wiring | None = None
) -> Wiring:
    """Initialise torch.distributed from the wiring (any launcher); returns the wiring.

    ``backend`` defaults to :func:`default_backend` (DEEPRC_BACKEND, else nccl with CUDA, which
    also selects ``cuda:local_rank``, and gloo otherwise); across nodes GLOO_SOCKET_IFNAME and
    NCCL_SOCKET_IFNAME default to the interface toward rank 0 (:mod:`deeprc_core.network`);
    ``timeout`` defaults to :func:`pg_timeout`. A no-op when a group already exists.
    """
    wiring = detect_wiring() if wiring is None else wiring
    if dist.is_initialized():
        return wiring
    backend = backend or default_backend()
    if backend == "nccl" and torch.cuda.is_available():
        torch.cuda.set_device(wiring.local_rank % max(torch.cuda.device_count(), 1))
    addr, port = rendezvous(wiring)
    apply_socket_ifname(addr, wiring.num_nodes)  # across nodes: the interface that reaches rank 0
    dist.init_process_group(
        backend,
        init_method=f"tcp://{addr}:{port}",
        rank=wiring.rank,
        world_size=wiring.world_size,
        timeout=pg_timeout(timeout),
    )
    return wiring
