"""Rank bodies of the core's fault cases of issue 28 (run by tests.support.runner on every rank).

Each body that expects a failure catches it and returns its type and message, so the test
can check what every rank was told.
"""

from __future__ import annotations

import os
import resource
import struct
import time
from pathlib import Path
from typing import Any


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _caught(fn: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        fn()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - t0}
    return {"error": None, "seconds": time.monotonic() - t0}


# ----------------------------------------------------------- (i) descriptors run out on rank 0
def fd_starved_job(fault_dir: str, nofile: str) -> dict[str, Any]:
    """Rank 0 runs with RLIMIT_NOFILE lowered to ``nofile`` and publishes its port; rank 1 joins on "go"."""
    from deeprc_core import get_communicator

    d, rank = Path(fault_dir), _rank()
    if rank == 0:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(nofile), hard))
        (d / "port").write_text(os.environ["MASTER_PORT"])
    else:
        deadline = time.monotonic() + 60
        while not (d / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    t0 = time.monotonic()
    comm = get_communicator()
    joined = time.monotonic() - t0
    got = comm.allgather(rank)
    return {
        "allgather": got,
        "joined_s": joined,
        "rejected": getattr(comm, "rejected", None),
        "fd_exhausted": getattr(comm, "fd_exhausted", None),
    }


# ----------------------------------------------------------- (i) a wildcard MASTER_ADDR
def wildcard_master_addr(addr: str) -> dict[str, Any]:
    """The job's MASTER_ADDR is a wildcard (as a user might set it); what each rank is told, and when."""
    from deeprc_core import get_communicator

    os.environ["MASTER_ADDR"] = addr
    return {**_caught(get_communicator), "t_end": time.time()}


# ----------------------------------------------------------- (i) forged frames
def forged_frame(direction: str) -> dict[str, Any]:
    """A frame with a wrong MAC on one connection, then two collectives; every rank reports what it was told.

    ``up``: rank 1 writes the forged frame toward rank 0. ``down``: rank 0 writes it toward rank 1.
    """
    from deeprc_core import get_communicator

    comm = get_communicator()
    comm.barrier()
    forged = struct.pack("!Q", 5) + b"\x00" * 32 + b"hello"  # the framing's length and MAC, then a payload
    if direction == "up" and comm.rank == 1:
        comm._root.sock.sendall(forged)  # type: ignore[attr-defined]
    if direction == "down" and comm.rank == 0:
        comm._peers[1].sock.sendall(forged)  # type: ignore[attr-defined]
    t0 = time.time()

    def two() -> None:
        comm.allgather(comm.rank)
        comm.allgather(comm.rank)

    return {**_caught(two), "t0": t0, "t_end": time.time()}


# ----------------------------------------------------------- (i) a rank dies of an exception
def _load_shard(rank: int) -> None:
    raise ValueError(f"shard {rank} has 3 columns, expected 4")


def uncaught_exception(dying: str) -> dict[str, Any]:
    """Rank ``dying`` dies of an uncaught exception while the others wait in a collective."""
    import sys

    from deeprc_core import get_communicator

    comm = get_communicator()
    comm.barrier()
    if comm.rank == int(dying):
        try:
            _load_shard(comm.rank)
        except ValueError:
            # What the interpreter does with an uncaught exception (the test runner catches every
            # exception itself, so it is called here explicitly): the excepthook, then exit.
            sys.excepthook(*sys.exc_info())
            sys.stderr.flush()
            os._exit(1)
    t0 = time.time()
    return {**_caught(lambda: comm.allgather(comm.rank)), "t0": t0, "t_end": time.time()}


# ----------------------------------------------------------- (i) a corrupt row group
def read_parquet_file(path: str) -> dict[str, Any]:
    """read_parquet of ``path`` and its global row count; what each rank was told if that fails."""
    import deeprc_core as d

    comm = d.get_communicator()
    comm.barrier()
    out: dict[str, Any] = {}

    def read() -> None:
        out["rows"] = d.read_parquet(path, comm=comm).num_rows

    return {**_caught(read), **out, "t_end": time.time()}


# ----------------------------------------------------------- (i) quoted newlines in a CSV
def read_csv_rows(path: str) -> dict[str, Any]:
    """This rank's partition of read_csv(``path``) as Python rows, and the global row count."""
    import deeprc_core as d

    t = d.read_csv(path)
    return {"rows": t.local.to_pylist(), "num_rows": t.num_rows}
