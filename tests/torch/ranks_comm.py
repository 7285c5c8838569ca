"""Rank bodies: the torch.distributed communicator and bad-input errors on every rank."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

import deeprc_core as dc
import deeprc_torch as dt
from examples.shipped_data import data_path

ETT = data_path("ett", "ETTh1.csv")
FEATURES = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL"]

torch.set_num_threads(1)


def _error(fn: Any) -> str | None:
    try:
        fn()
    except Exception as exc:  # the test inspects type and message
        return f"{type(exc).__name__}: {exc}"
    return None


def comm_and_bad_inputs() -> dict[str, Any]:
    """A table read before the process group, then the torch communicator, then four bad inputs."""
    before = dc.read_csv(ETT)  # no process group yet: the core falls back to MPI or TCP
    out: dict[str, Any] = {"before_comm": before.comm.kind, "before_rows": before.num_rows}
    dt.init_process_group()
    comm = dc.get_communicator() if dc.get_communicator().kind == "torch" else dt.TorchCommunicator()
    rank, size = comm.rank, comm.size
    out["kind"] = comm.kind
    out["allgather"] = comm.allgather({"rank": rank, "blob": "x" * (rank * 1000)})
    out["bcast"] = comm.bcast([rank, "hello"], root=size - 1)
    out["allreduce"] = comm.allreduce_int([rank, 1, -rank], "sum")
    sent = [bytes([rank, dst]) * (dst * 3000 + rank) for dst in range(size)]
    got = comm.alltoall_bytes(sent)
    out["alltoall_ok"] = all(bytes(got[src]) == bytes([src, rank]) * (rank * 3000 + src) for src in range(size))
    comm.barrier()
    table = dc.read_csv(ETT, comm=comm)
    shuffled = table.global_shuffle(seed=3)
    out["shuffled_rows"] = shuffled.num_rows
    out["shuffled_ot_sum"] = float(np.sum(shuffled.local.column("OT").to_numpy()))
    out["ot_sum"] = float(np.sum(table.local.column("OT").to_numpy()))
    null_on_last = table.with_column(
        "HULL", pa.array([None if (rank == size - 1 and i == 0) else 1.0 for i in range(table.local_num_rows)])
    )
    out["errors"] = {
        "missing": _error(lambda: dt.loader(table, ["HUFL", "no_such"], "OT", 32)),
        "null": _error(lambda: dt.loader(null_on_last, FEATURES, "OT", 32)),
        "string": _error(lambda: dt.loader(table, ["date", "HUFL"], "OT", 32)),
        "window_table": _error(lambda: dt.loader(table, FEATURES, "OT", 32, window=(20000, 24))),
        # even='drop' keeps the short rank short (the default even='auto' would move rows onto it and train)
        "window_partition": _error(
            lambda: dt.loader(table, FEATURES, "OT", 32, window=(table.num_rows // size + 200, 8), even="drop")
        ),
    }
    comm.barrier()  # every rank is still in step after the failures
    return out
