"""Communicators: how the ranks of a job talk to each other.

:func:`get_communicator` picks one for the current job:

1. ``DEEPRC_COMM`` (``local``, ``mpi``, ``tcp`` or the name of a registered provider)
   when set;
2. a registered provider that says it is available (deeprc-torch registers one that
   rides on an initialised ``torch.distributed`` process group);
3. MPI through mpi4py when the job was started by an MPI launcher and mpi4py imports;
4. the built-in TCP communicator through rank 0 (port ``master_port + 1``; its ranks
   authenticate with the job's secret, see :mod:`deeprc_core.comm.secret`);
5. the local communicator for a single process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .. import env_vars
from ..wiring import Wiring, detect_wiring
from .base import BaseCommunicator, Communicator, agree, default_timeout
from .local import LocalCommunicator
from .tcp import TCPCommunicator

__all__ = [
    "BaseCommunicator",
    "Communicator",
    "LocalCommunicator",
    "TCPCommunicator",
    "MPICommunicator",
    "agree",
    "default_timeout",
    "get_communicator",
    "register_communicator",
    "set_default_communicator",
]

#: Offset from MASTER_PORT of the TCP communicator's port (torch uses MASTER_PORT itself).
TCP_PORT_OFFSET = 1


@dataclass
class _Provider:
    available: Callable[[], bool]
    factory: Callable[[Wiring], Communicator]
    priority: int


_providers: dict[str, _Provider] = {}
_default: Communicator | None = None


def register_communicator(
    name: str,
    factory: Callable[[Wiring], Communicator],
    available: Callable[[], bool] = lambda: True,
    priority: int = 100,
) -> None:
    """Let an adapter supply communicators (e.g. deeprc-torch over torch.distributed).

    ``available()`` says whether the provider can serve now; among available providers
    the lowest ``priority`` wins, before MPI and TCP are considered.
    """
    _providers[name] = _Provider(available, factory, priority)


def set_default_communicator(comm: Communicator | None) -> None:
    """Make ``comm`` what :func:`get_communicator` returns (None forgets it)."""
    global _default
    _default = comm


def _launched_by_mpi() -> bool:
    from ..launchers import launched_by_mpi

    return launched_by_mpi(os.environ)


def _make(name: str, wiring: Wiring) -> Communicator:
    if name == "local":
        if wiring.world_size != 1:
            raise ValueError(f"{env_vars.COMM}=local but the job has {wiring.world_size} ranks")
        return LocalCommunicator()
    if name == "mpi":
        from .mpi import MPICommunicator

        return MPICommunicator()
    if name == "tcp":
        if wiring.master_addr is None or wiring.master_port is None:
            raise ValueError(
                "the TCP communicator needs MASTER_ADDR and MASTER_PORT (or DEEPRC_MASTER_ADDR/PORT); "
                f"wiring from {wiring.source!r} has addr={wiring.master_addr!r} port={wiring.master_port!r}"
            )
        single_host = wiring.num_nodes == 1 and len(set(wiring.hosts or ())) <= 1
        return TCPCommunicator(
            wiring.rank,
            wiring.world_size,
            wiring.master_addr,
            wiring.master_port + TCP_PORT_OFFSET,
            single_host=single_host,
        )
    if name in _providers:
        return _providers[name].factory(wiring)
    known = ["local", "mpi", "tcp", *sorted(_providers)]
    raise ValueError(f"{env_vars.COMM}={name!r} is not a known communicator; choose one of {known}")


def get_communicator(wiring: Wiring | None = None) -> Communicator:
    """The communicator of the current job (created once, then reused)."""
    global _default
    if _default is not None:
        return _default
    wiring = detect_wiring() if wiring is None else wiring
    choice = os.environ.get(env_vars.COMM, "").strip().lower()
    if choice:
        comm = _make(choice, wiring)
    elif wiring.world_size == 1:
        comm = LocalCommunicator()
    else:
        ready = sorted((p.priority, n) for n, p in _providers.items() if p.available())
        if ready:
            comm = _providers[ready[0][1]].factory(wiring)
        elif _launched_by_mpi() and _mpi4py_importable():
            comm = _make("mpi", wiring)
        else:
            comm = _make("tcp", wiring)
    if comm.size != wiring.world_size or comm.rank != wiring.rank:
        raise ValueError(
            f"communicator {comm.kind!r} says rank {comm.rank} of {comm.size}, but the wiring from "
            f"{wiring.source!r} says rank {wiring.rank} of {wiring.world_size}"
        )
    _default = comm
    return comm


def _mpi4py_importable() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def __getattr__(name: str) -> object:
    if name == "MPICommunicator":  # imported lazily: mpi4py is optional
        from .mpi import MPICommunicator

        return MPICommunicator
    raise AttributeError(name)
