"""Rank bodies for tests/test_ranks_helper.py."""

from __future__ import annotations

from typing import Any

import deeprc_core


def exchange() -> dict[str, Any]:
    comm = deeprc_core.get_communicator()
    out = [f"from {comm.rank} to {dst}".encode() for dst in range(comm.size)]
    got = [bytes(b) for b in comm.alltoall_bytes(out)]
    return {"rank": comm.rank, "got": got, "gathered": comm.allgather(comm.rank * 10)}


def crash_on_rank_1() -> None:
    comm = deeprc_core.get_communicator()
    comm.barrier()
    if comm.rank == 1:
        raise RuntimeError("rank 1 exploded on purpose")
    comm.barrier()  # rank 0 waits here until rank 1's failure reaches it
