"""Rank bodies of test_comm.py (run on real processes by tests.support.ranks.run_ranks)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from deeprc_core import CommError, CommTimeoutError, RankFailedError, agree, detect_wiring, get_communicator


def collectives() -> dict[str, Any]:
    """Every collective once, plus agree() with one failing rank."""
    comm = get_communicator()
    r, p = comm.rank, comm.size
    out: dict[str, Any] = {"kind": comm.kind, "rank": r, "size": p, "wiring": detect_wiring().source}
    comm.barrier()
    out["allgather"] = comm.allgather({"r": r, "sq": r * r})
    out["bcast"] = comm.bcast(f"from {p - 1}" if r == p - 1 else None, root=p - 1)
    out["sum"] = comm.allreduce_int([r, 1, 10], "sum")
    out["min"] = comm.allreduce_int([r + 5], "min")
    out["max"] = comm.allreduce_int([r + 5], "max")
    # To rank d: d+1 copies of byte r; the buffer to rank 0 is empty on purpose; one big one.
    bufs = [bytes([r]) * (d + 1) if d else b"" for d in range(p)]
    bufs[p - 1] = bytes([r]) * (3 << 20) if r == 0 else bufs[p - 1]
    got = comm.alltoall_bytes(bufs)
    out["alltoall"] = [(len(g), bytes(g[:1])) for g in got]
    # agree(): rank 1 fails its validation; every rank must raise.
    err = ValueError("column 'x' missing on this rank") if r == 1 else None
    try:
        agree(comm, err, "validation")
        out["agree"] = "no error"
    except RankFailedError as exc:
        out["agree"] = ("RankFailedError", str(exc), exc.failed_ranks)
    except ValueError as exc:
        out["agree"] = ("ValueError", str(exc))
    comm.barrier()
    return out


def stuck_rank(stuck: str = "1") -> dict[str, Any]:
    """Rank ``stuck`` never enters the collective: the others must raise CommTimeoutError in time."""
    comm = get_communicator()
    comm.barrier()
    if comm.rank == int(stuck):
        time.sleep(float(os.environ["STUCK_SECONDS"]))
        return {"stuck": True}
    t0 = time.monotonic()
    try:
        comm.allgather(comm.rank)
    except CommError as exc:
        if os.environ.get("RERAISE"):  # under MPI: let it end the job, as an uncaught error would
            print(f"elapsed {time.monotonic() - t0:.2f}", file=sys.stderr)
            raise
        return {
            "error": type(exc).__name__,
            "message": str(exc),
            "elapsed": time.monotonic() - t0,
            "timeout_error": isinstance(exc, CommTimeoutError),
        }
    return {"error": None}


def failing_rank() -> dict[str, Any]:
    """Rank 1 raises (its process exits 1) before a collective: the others must fail, not hang."""
    comm = get_communicator()
    comm.barrier()
    if comm.rank == 1:
        raise RuntimeError("rank 1 broke while preparing its data")
    t0 = time.monotonic()
    try:
        comm.allgather("ready")
        comm.barrier()
    except CommError as exc:
        return {"error": type(exc).__name__, "message": str(exc), "elapsed": time.monotonic() - t0}
    return {"error": None}


def uncaught_on_one_rank() -> None:
    """Rank 1 hits an uncaught exception; the MPI excepthook must abort the job (others wait 120 s)."""
    from deeprc_core.comm.mpi import MPICommunicator

    comm = MPICommunicator(timeout=120)
    comm.barrier()
    if comm.rank == 1:
        try:
            raise ValueError("boom on rank 1")
        except ValueError:
            sys.excepthook(*sys.exc_info())  # what Python does with an uncaught exception
    comm.barrier()
