"""A communicator over mpi4py with bounded waits.

Blocking MPI collectives wait forever when a peer is gone, so every collective here is
started non-blocking and polled against a deadline. When a deadline passes the rank
raises :class:`CommTimeoutError`; the uncaught-exception hook installed by
:class:`MPICommunicator` then calls ``MPI_Abort`` so that mpirun ends every rank.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np

from .. import env_vars
from ..errors import CommTimeoutError
from .base import BaseCommunicator, default_timeout, pickled

#: Largest message one MPI call moves; counts are C ints, so stay well below 2 GiB.
CHUNK_BYTES = 256 * 1024 * 1024

_HOOK_INSTALLED = False

#: Seconds between printing an uncaught exception and aborting the MPI job.
ABORT_GRACE_S = 1.0


def _import_mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - exercised only without mpi4py
        raise ImportError(
            "The MPI communicator needs mpi4py: pip install 'deeprc-core[mpi]' "
            "(it builds against the MPI on your PATH, e.g. Debian's libopenmpi-dev)."
        ) from exc
    return MPI


def _install_abort_hook(comm: Any) -> None:
    """An uncaught exception on one rank aborts the whole MPI job (after printing it)."""
    global _HOOK_INSTALLED
    if _HOOK_INSTALLED or os.environ.get(env_vars.MPI_ABORT_ON_ERROR, "1") == "0":
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        rank = comm.Get_rank()
        # The real stderr: hooks installed later (torch.distributed's) wrap this one and capture
        # what it writes to sys.stderr to print it afterwards, which MPI_Abort would prevent.
        err = sys.__stderr__ or sys.stderr
        err.write(f"[deeprc rank {rank}] uncaught exception, aborting the MPI job:\n")
        err.write("".join(traceback.format_exception(kind, value, tb)))
        err.flush()
        if kind is KeyboardInterrupt:
            previous(kind, value, tb)
        # mpirun forwards a rank's output asynchronously and drops what is still in flight when
        # MPI_Abort kills the job: give it a moment, or the traceback is lost.
        time.sleep(ABORT_GRACE_S)
        comm.Abort(1)

    sys.excepthook = hook
    _HOOK_INSTALLED = True


class MPICommunicator(BaseCommunicator):
    """Collectives over an mpi4py communicator (``MPI.COMM_WORLD`` by default)."""

    kind = "mpi"

    def __init__(self, comm: Any = None, timeout: float | None = None, abort_on_error: bool = True) -> None:
        mpi = _import_mpi()
        self._MPI = mpi
        self.comm = mpi.COMM_WORLD if comm is None else comm
        self.timeout = default_timeout() if timeout is None else float(timeout)
        self._rank = int(self.comm.Get_rank())
        self._size = int(self.comm.Get_size())
        if abort_on_error and self._size > 1:
            _install_abort_hook(self.comm)

    @property
    def rank(self) -> int:
        """This process's rank in the MPI communicator."""
        return self._rank

    @property
    def size(self) -> int:
        """Size of the MPI communicator."""
        return self._size

    def _wait(self, request: Any, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        pause = 1e-5
        while not request.Test():
            if time.monotonic() > deadline:
                raise CommTimeoutError(
                    f"rank {self._rank}: MPI {what} did not complete within {self.timeout:g}s "
                    "(a peer rank is stuck or gone; raise DEEPRC_COMM_TIMEOUT if it is just slow)"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def barrier(self) -> None:
        """Non-blocking barrier polled against the timeout."""
        self._wait(self.comm.Ibarrier(), "barrier")

    def _allgather_counts(self, value: int, what: str) -> np.ndarray:
        send = np.array([value], dtype=np.int64)
        recv = np.empty(self._size, dtype=np.int64)
        self._wait(self.comm.Iallgather(send, recv), what)
        return recv

    def allgather(self, obj: Any) -> list[Any]:
        """Pickle, exchange sizes, then the bytes (Iallgatherv)."""
        payload = np.frombuffer(pickled(obj), dtype=np.uint8)
        sizes = self._allgather_counts(payload.size, "allgather(sizes)")
        if int(sizes.max(initial=0)) > CHUNK_BYTES:
            raise ValueError("allgather is for small objects; use alltoall_bytes for data")
        displs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        recv = np.empty(int(sizes.sum()), dtype=np.uint8)
        req = self.comm.Iallgatherv(payload, [recv, sizes.astype(np.int32), displs.astype(np.int32), self._MPI.BYTE])
        self._wait(req, "allgather")
        return [pickle.loads(recv[d : d + s].tobytes()) for d, s in zip(displs, sizes)]

    def alltoall_bytes(self, buffers: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
        """Alltoallv in rounds of at most CHUNK_BYTES per peer, so counts never overflow.

        In the usual single round nothing is copied on this side of MPI: buffers laid out
        back to back in one allocation (as :func:`~deeprc_core.exchange.exchange_parts`
        writes them) are sent as they are, and the result is views into the one receive
        buffer. Larger exchanges copy each round's slices in and out of round buffers.
        """
        if len(buffers) != self._size:
            raise ValueError(f"alltoall_bytes needs one buffer per rank ({self._size}), got {len(buffers)}")
        views = [np.frombuffer(b, dtype=np.uint8) if len(b) else np.empty(0, np.uint8) for b in buffers]
        send_sizes = np.array([v.size for v in views], dtype=np.int64)
        recv_sizes = np.empty(self._size, dtype=np.int64)
        self._wait(self.comm.Ialltoall(send_sizes, recv_sizes), "alltoall(sizes)")
        rounds = int(max(send_sizes.max(initial=0), recv_sizes.max(initial=0)) + CHUNK_BYTES - 1) // CHUNK_BYTES
        # Every rank computes the same number of rounds from its own sizes; agree on the max.
        rounds = max(self.allreduce_int([rounds], "max")[0], 1)
        if rounds == 1:
            return self._alltoall_one_round(views, send_sizes, recv_sizes)
        outputs = [np.empty(int(n), dtype=np.uint8) for n in recv_sizes]
        for k in range(rounds):
            lo = k * CHUNK_BYTES
            s_counts = np.clip(send_sizes - lo, 0, CHUNK_BYTES)
            r_counts = np.clip(recv_sizes - lo, 0, CHUNK_BYTES)
            send = (
                np.concatenate([v[lo : lo + c] for v, c in zip(views, s_counts)])
                if s_counts.sum()
                else np.empty(0, np.uint8)
            )
            recv = np.empty(int(r_counts.sum()), dtype=np.uint8)
            s_displs, r_displs = _displacements(s_counts), _displacements(r_counts)
            req = self.comm.Ialltoallv(
                [send, s_counts.astype(np.int32), s_displs.astype(np.int32), self._MPI.BYTE],
                [recv, r_counts.astype(np.int32), r_displs.astype(np.int32), self._MPI.BYTE],
            )
            self._wait(req, f"alltoall(round {k + 1}/{rounds})")
            del send
            for src in range(self._size):
                c = int(r_counts[src])
                if c:
                    outputs[src][lo : lo + c] = recv[r_displs[src] : r_displs[src] + c]
        return [o.data for o in outputs]

    def _alltoall_one_round(
        self, views: list[np.ndarray], send_sizes: np.ndarray, recv_sizes: np.ndarray
    ) -> list[bytes | memoryview]:
        """One Ialltoallv of everything: send the callers' bytes in place if they are contiguous, return views."""
        send = _contiguous(views)
        if send is None:  # separate allocations: gather them once
            send = np.concatenate(views) if send_sizes.sum() else np.empty(0, np.uint8)
        recv = np.empty(int(recv_sizes.sum()), dtype=np.uint8)
        s_displs, r_displs = _displacements(send_sizes), _displacements(recv_sizes)
        req = self.comm.Ialltoallv(
            [send, send_sizes.astype(np.int32), s_displs.astype(np.int32), self._MPI.BYTE],
            [recv, recv_sizes.astype(np.int32), r_displs.astype(np.int32), self._MPI.BYTE],
        )
        self._wait(req, "alltoall")
        mv = recv.data
        return [mv[int(d) : int(d) + int(n)] for d, n in zip(r_displs, recv_sizes)]

    def allreduce_int(self, values: Sequence[int], op: str = "sum") -> list[int]:  # type: ignore[override]
        """Iallreduce of an int64 vector."""
        send = np.asarray([int(v) for v in values], dtype=np.int64)
        recv = np.empty_like(send)
        mpi_op = {"sum": self._MPI.SUM, "min": self._MPI.MIN, "max": self._MPI.MAX}[op]
        self._wait(self.comm.Iallreduce(send, recv, op=mpi_op), f"allreduce({op})")
        return [int(v) for v in recv]


def _displacements(counts: np.ndarray) -> np.ndarray:
    """Start offset of every block when blocks of ``counts`` bytes lie back to back."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def _contiguous(views: Sequence[np.ndarray]) -> np.ndarray | None:
    """One array spanning ``views`` if they lie back to back in memory (in order), else None."""
    nonempty = [v for v in views if v.size]
    if not nonempty:
        return np.empty(0, np.uint8)
    start = nonempty[0].__array_interface__["data"][0]
    pos = start
    for v in nonempty:
        if v.__array_interface__["data"][0] != pos:
            return None
        pos += v.size
    if len(nonempty) == 1:
        return nonempty[0]
    # rebuild one array over [start, pos) from the allocation the first view lies in
    base = _owner(nonempty[0])
    base_start = base.__array_interface__["data"][0]
    if base.ndim != 1 or base.dtype != np.uint8 or not (base_start <= start and pos <= base_start + base.size):
        return None
    return base[start - base_start : pos - base_start]


def _owner(view: np.ndarray) -> np.ndarray:
    """The outermost numpy array ``view`` was cut from (through ndarray bases and memoryview objects)."""
    owner, obj = view, view.base
    while isinstance(obj, (np.ndarray, memoryview)):
        if isinstance(obj, np.ndarray):
            owner, obj = obj, obj.base
        else:
            obj = obj.obj
    return owner
