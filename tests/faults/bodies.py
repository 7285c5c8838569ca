"""Rank bodies of the fault suite (run by tests.support.runner on every rank)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


def _rank() -> int:
    for name in ("RANK", "OMPI_COMM_WORLD_RANK", "DEEPRC_RANK"):
        if os.environ.get(name, "") != "":
            return int(os.environ[name])
    return 0


# ------------------------------------------------------------------------ (a) strangers
def stranger_job(fault_dir: str) -> dict[str, Any]:
    """Rank 0 publishes its port and waits for rank 1, which joins only after the strangers had their go."""
    from deeprc_core import get_communicator

    d, rank = Path(fault_dir), _rank()
    if rank == 0:
        (d / "port").write_text(os.environ["MASTER_PORT"])
    else:
        deadline = time.monotonic() + 60
        while not (d / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    comm = get_communicator()
    got = comm.allgather(rank)
    back = comm.alltoall_bytes([bytes([rank]) * 1000 for _ in range(comm.size)])
    return {"allgather": got, "alltoall": [bytes(b) for b in back], "rejected": getattr(comm, "rejected", None)}


# ------------------------------------------------------------------------ (f) bad inputs
def _column_table(rank: int) -> pa.Table:
    n = 64
    x = np.arange(n, dtype=np.float32) + 100 * rank
    nulls = pa.array([None if (rank == 1 and i == 3) else float(v) for i, v in enumerate(x)], pa.float32())
    return pa.table(
        {
            "x": x,
            "y": x * 2,
            "with_nulls": nulls,
            "s": pa.array([f"r{rank}-{i}" for i in range(n)]),
            "b": pa.array([i % 2 == 0 for i in range(n)]),
            "ts": pa.array(np.arange(n).astype("datetime64[s]")),
        }
    )


def _misaligned(rank: int) -> pa.Table:
    """A float32 column whose data buffer starts 1 byte past an aligned address (then 4-byte aligned... not)."""
    raw = np.zeros(64 * 4 + 1, dtype=np.uint8)
    values = np.arange(64, dtype=np.float32) + 100 * rank
    raw[1:] = values.view(np.uint8)
    buf = pa.py_buffer(raw)[1:]
    arr = pa.Array.from_buffers(pa.float32(), 64, [None, buf])
    return pa.table({"x": arr, "y": pa.array(values * 2)})


def _mapped(rank: int, folder: str) -> pa.Table:
    path = Path(folder) / f"part-{rank}.arrow"
    values = np.arange(64, dtype=np.float32) + 100 * rank
    with (
        pa.OSFile(str(path), "wb") as sink,
        pa.ipc.new_file(sink, pa.schema([("x", pa.float32()), ("y", pa.float32())])) as w,
    ):
        w.write_table(pa.table({"x": values, "y": values * 2}))
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


#: case -> (table maker, adapter keyword arguments); every one must fail on every rank, clearly
ERROR_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "nulls in features (rank 1 only)": ("columns", {"features": "with_nulls", "target": "y", "batch_size": 8}),
    "string column": ("columns", {"features": "s", "target": "y", "batch_size": 8}),
    "bool column": ("columns", {"features": "b", "target": "y", "batch_size": 8}),
    "timestamp column": ("columns", {"features": "ts", "target": "y", "batch_size": 8}),
    # even='drop': the default even='auto' moves rows onto the empty rank instead (tests/core/test_batches.py)
    "partition empty on rank 1": ("empty1", {"features": "x", "target": "y", "batch_size": 8, "even": "drop"}),
    "batch_size 0": ("columns", {"features": "x", "target": "y", "batch_size": 0}),
    "batch_size '8'": ("columns", {"features": "x", "target": "y", "batch_size": "8"}),
    "batch_size 2.7": ("columns", {"features": "x", "target": "y", "batch_size": 2.7}),
    "window longer than a partition": (
        "columns",
        {"features": "x", "target": "y", "batch_size": 8, "window": (80, 4), "even": "drop"},
    ),
}
#: cases that must work, with the right values
VALUE_CASES = {"misaligned buffer": "misaligned", "memory-mapped buffer": "mapped"}


def _table(kind: str, rank: int, folder: str) -> Any:
    from deeprc_core import GlobalTable

    if kind == "columns":
        return GlobalTable.from_arrow(_column_table(rank))
    if kind == "empty1":
        t = _column_table(rank)
        return GlobalTable.from_arrow(t.slice(0, 0) if rank == 1 else t)
    if kind == "misaligned":
        return GlobalTable.from_arrow(_misaligned(rank))
    return GlobalTable.from_arrow(_mapped(rank, folder))


def _torch_batches(table: Any, kw: dict[str, Any]) -> list[np.ndarray]:
    from deeprc_torch import loader

    kw = dict(kw)
    return [
        xb.numpy()
        for xb, _ in loader(table, kw.pop("features"), kw.pop("target"), kw.pop("batch_size"), shuffle=False, **kw)
    ]


def _tf_batches(table: Any, kw: dict[str, Any]) -> list[np.ndarray]:
    from deeprc_tf import DeepRCSequence

    kw = dict(kw)
    seq = DeepRCSequence(table, kw.pop("features"), kw.pop("target"), kw.pop("batch_size"), shuffle=False, **kw)
    return [np.asarray(seq[i][0]) for i in range(len(seq))]


def bad_inputs(adapter: str, folder: str) -> dict[str, Any]:
    """Every case on this rank: the error it raised (type, message, seconds) or the batches' first values."""
    import deeprc_core  # noqa: F401 - import cost outside the timings

    if adapter == "torch":
        import deeprc_torch  # noqa: F401

        batches = _torch_batches
    else:
        import deeprc_tf  # noqa: F401

        batches = _tf_batches
    from deeprc_core import get_communicator

    rank, comm = _rank(), get_communicator()
    comm.barrier()
    batches(_table("columns", rank, folder), {"features": "x", "target": "y", "batch_size": 8})  # warm up
    out: dict[str, Any] = {}
    for case, (kind, kw) in ERROR_CASES.items():
        comm.barrier()  # both ranks start the case together: the figure is detection, not import lag
        t0 = time.monotonic()
        try:
            batches(_table(kind, rank, folder), kw)
            out[case] = {"error": None, "seconds": time.monotonic() - t0}
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[case] = {"error": type(exc).__name__, "message": str(exc), "seconds": time.monotonic() - t0}
    for case, kind in VALUE_CASES.items():
        comm.barrier()
        t0 = time.monotonic()
        got = batches(_table(kind, rank, folder), {"features": "x", "target": "y", "batch_size": 16})
        flat = np.concatenate([b.reshape(-1) for b in got])
        out[case] = {
            "ok": bool(np.array_equal(flat, np.arange(64, dtype=np.float32) + 100 * rank)),
            "seconds": time.monotonic() - t0,
        }
    return out


# ------------------------------------------------------------------------ (g) interrupted ops
def digest(paths: list[str]) -> dict[str, str]:
    """sha256 of each file."""
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def interrupted_op(op: str, folder: str) -> dict[str, Any]:
    """Both ranks read the inputs and start ``op``; rank 1 dies (os._exit) inside its first exchange."""
    import deeprc_core as drc
    from deeprc_core import get_communicator

    rank = _rank()
    comm = get_communicator()
    left = drc.read_parquet(str(Path(folder) / "left.parquet"))
    right = drc.read_parquet(str(Path(folder) / "right.parquet"))
    if rank == 1:
        real = comm.alltoall_bytes

        def die(*a: Any, **k: Any) -> Any:
            (Path(folder) / "died").write_text(repr(time.time()))
            os._exit(9)

        comm.alltoall_bytes = die  # type: ignore[method-assign]
        del real
    t0 = time.monotonic()
    try:
        if op == "join":
            left.join(right, on="k")
        else:
            left.groupby("k").agg({"v": "sum"})
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return {"error": type(exc).__name__, "message": str(exc), "seconds": time.monotonic() - t0, "at": time.time()}
    return {"error": None}
