"""Rank bodies for the engine tests: deterministic per-rank data, every operation, local results back.

Each body returns plain picklable values (Arrow IPC bytes of every local result and of the
inputs), so the test process can gather them in rank order and compare with pyarrow/pandas.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
from deeprc_core.exchange import table_to_bytes
from deeprc_core.table import GlobalTable

from deeprc_core import get_communicator

VOCAB = ["apple", "banana", "", "cherry", "dürüm", "egg", "fig" * 5, "grape"]


def make_part(seed: int, rank: int, size: int, rows: int = 60) -> pa.Table:
    """This rank's partition: duplicate/null keys of several types, a hot key; rank 1 is empty when size > 1."""
    rng = np.random.default_rng([seed, rank])
    n = 0 if (size > 1 and rank == 1) else rows + 7 * rank
    k_int = rng.integers(0, 15, n)
    k_int_null = rng.random(n) < 0.1
    k_str = np.array(VOCAB, dtype=object)[rng.integers(0, len(VOCAB), n)]
    k_str[rng.random(n) < 0.1] = None
    base = dt.datetime(2024, 1, 1)
    k_ts = [base + dt.timedelta(hours=int(h)) for h in rng.integers(0, 6, n)]
    k_f = rng.integers(0, 5, n).astype(np.float64) / 4 - 0.5
    hot = np.where(rng.random(n) < 0.7, 42, rng.integers(0, 100, n))
    return pa.table(
        {
            "k_int": pa.array(k_int, mask=k_int_null, type=pa.int64()),
            "k_str": pa.array(list(k_str), type=pa.string()),
            "k_ts": pa.array(k_ts, type=pa.timestamp("us")),
            "k_f": pa.array(k_f, mask=rng.random(n) < 0.05),
            "k_b": pa.array(rng.random(n) < 0.5),
            "hot": pa.array(hot, type=pa.int64()),
            "v": pa.array(rng.integers(-50, 50, n), type=pa.int64()),
            "w": pa.array(rng.normal(size=n)),
        }
    )


def make_right(seed: int, rank: int, size: int) -> pa.Table:
    """A right-hand table sharing key columns and the column name ``v`` (to test suffixes)."""
    t = make_part(seed + 1000, rank, size, rows=40)
    return t.select(["k_int", "k_str", "k_ts", "v"]).append_column("r", pa.array(np.arange(t.num_rows), pa.int64()))


JOINS = [
    ("int_inner", {"on": "k_int", "how": "inner"}),
    ("int_left", {"on": "k_int", "how": "left"}),
    ("int_right", {"on": "k_int", "how": "right"}),
    ("int_outer", {"on": "k_int", "how": "outer"}),
    ("str_inner", {"on": "k_str", "how": "inner"}),
    ("multi_outer", {"on": ["k_str", "k_ts"], "how": "outer"}),
]
SORTS = [
    ("sort_int", {"by": "k_int"}),
    ("sort_hot", {"by": "hot", "ascending": False}),
    ("sort_multi", {"by": ["k_str", "k_ts", "k_f"], "ascending": [False, True, True]}),
    ("sort_bool_float", {"by": ["k_b", "k_f"]}),
]
AGGS = {"v": ["sum", "mean", "std", "count", "min", "max"], "w": "max"}


def all_ops(seed: str = "0", engine: str = "arrow") -> dict[str, bytes]:
    """Run every operation on this rank's data; return IPC bytes of inputs and local results."""
    comm = get_communicator()
    s = int(seed)
    left = GlobalTable(make_part(s, comm.rank, comm.size), comm)
    right = GlobalTable(make_right(s, comm.rank, comm.size), comm)
    out = {"left": left.local, "right": right.local}
    for name, kw in JOINS:
        out[name] = left.join(right, engine=engine, **kw).local
    out["lr_inner"] = left.join(right, left_on="hot", right_on="r", how="inner", engine=engine).local
    for name, kw in SORTS:
        out[name] = left.sort(engine=engine, **kw).local
    out["groupby_str"] = left.groupby("k_str", engine=engine).agg(AGGS).local
    out["groupby_multi"] = left.groupby(["k_int", "k_b"], engine=engine).agg({"w": ["mean", "std"]}).local
    out["dedupe"] = left.drop_duplicates(["k_str", "k_b"], engine=engine).local
    out["dedupe_all"] = left.drop_duplicates(engine=engine).local
    out["shuffle_str"] = left.shuffle("k_str", engine=engine).local
    out["shuffle_multi"] = left.shuffle(["k_ts", "k_f"], num_partitions=7, engine=engine).local
    out["concat"] = GlobalTable.concat([left, left]).local
    empty = GlobalTable(left.local.slice(0, 0), comm)
    out["empty_join"] = empty.join(right, on="k_int", how="outer", engine=engine).local
    out["empty_sort"] = empty.sort("k_str", engine=engine).local
    out["empty_groupby"] = empty.groupby("k_str", engine=engine).agg(AGGS).local
    return {k: bytes(table_to_bytes(v)) for k, v in out.items()}


def missing_key(seed: str = "0") -> str:
    """Rank 1 lacks the key column: every rank must raise (never hang); returns the error text."""
    comm = get_communicator()
    t = make_part(int(seed), comm.rank, comm.size, rows=10)
    if comm.rank == 1:
        t = t.select([c for c in t.column_names if c != "k_int"])  # drop_columns needs pyarrow >= 12
    g = GlobalTable(t, comm, _checked=True)  # skip the constructor's schema check on purpose
    r = GlobalTable(make_right(int(seed), comm.rank, comm.size), comm)
    try:
        g.join(r, on="k_int")
    except Exception as exc:  # noqa: BLE001 - the test inspects every rank's error
        return f"{type(exc).__name__}: {exc}"
    return "no error"
