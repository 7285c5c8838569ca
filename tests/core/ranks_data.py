"""Rank bodies of test_readers.py, test_table.py's multi-rank tests and test_batches.py."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import deeprc_core as d
from deeprc_core import GlobalTable, RankFailedError, SchemaError, TableBatches

FEATURES = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL"]


def _ids(table: pa.Table, column: str) -> np.ndarray:
    col = table.column(column)
    if pa.types.is_timestamp(col.type):
        col = pc.cast(col, pa.int64())
    return np.asarray(col.to_numpy(), dtype=np.int64) if col.num_chunks else np.empty(0, np.int64)


def read_all(kind: str, path: str, id_column: str) -> dict[str, Any]:
    """Read with one reader; report this rank's rows, their ids and global statistics."""
    reader = {"csv": d.read_csv, "parquet": d.read_parquet, "ipc": d.read_ipc}[kind]
    t = reader(path)
    num = [c for c in t.column_names if c != id_column and pa.types.is_floating(t.schema.field(c).type)]
    return {
        "rows": t.local_num_rows,
        "ids": _ids(t.local, id_column),
        "row_counts": t.row_counts,
        "num_rows": t.num_rows,
        "schema": str(t.schema),
        "mean_std": t.global_mean_std(num),
        "min_max": t.global_min_max(num),
    }


def table_ops(path: str) -> dict[str, Any]:
    """Splits, the global shuffle, uneven and empty partitions, and errors that must reach every rank."""
    t = d.read_csv(path)
    r, p = t.rank, t.world_size
    out: dict[str, Any] = {}
    t = t.with_column("gid", pa.array(np.arange(t.local_num_rows) + t.row_offset))
    # Informer's ETTh1 split: 12/4/4 months of 30 days, validation/test reaching seq_len back.
    parts = t.split(boundaries=[8640, 11520, 14400], overlap=96)
    out["informer"] = [(p_.num_rows, _ids(p_.local, "gid")) for p_ in parts]
    out["random"] = [_ids(p_.local, "gid") for p_ in t.split([0.7, 0.1, 0.2], ordered=False, seed=11)]
    out["shuffled"] = _ids(t.global_shuffle(seed=5, epoch=2).local, "gid")
    out["shuffle_counts"] = t.global_shuffle(seed=5, epoch=2).row_counts
    # Uneven partitions with an empty one: rank r holds 0 rows on rank 1, else 7 * (r + 1).
    n_local = 0 if r == 1 else 7 * (r + 1)
    start = sum(0 if k == 1 else 7 * (k + 1) for k in range(r))
    u = GlobalTable.from_arrow(pa.table({"v": np.arange(start, start + n_local, dtype=np.float64)}))
    out["uneven"] = (u.row_counts, u.num_rows, u.row_offset, u.global_mean_std(["v"]), u.global_min_max(["v"]))
    out["uneven_head"] = u.head(3, root=0)
    out["uneven_shuffle"] = _ids(u.global_shuffle(seed=1).local, "v")
    # A schema that differs on one rank fails on every rank.
    bad = pa.table({"v": np.zeros(2, dtype=np.float32 if r == p - 1 else np.float64)})
    try:
        GlobalTable.from_arrow(bad)
        out["schema_error"] = None
    except SchemaError as exc:
        out["schema_error"] = str(exc)
    # A missing file is a clear error on every rank, not a hang.
    try:
        d.read_csv(path + ".missing")
        out["missing_file"] = None
    except FileNotFoundError as exc:
        out["missing_file"] = str(exc)
    try:
        d.read_csv(path, columns=["OT", "nope"])
    except SchemaError as exc:
        out["missing_column"] = str(exc)
    t.comm.barrier()
    return out


def _epoch_ids(tb: TableBatches, epoch: int) -> tuple[int, np.ndarray, list[int], int]:
    batches = list(tb.epoch(epoch))
    ids = np.concatenate([b.index for b in batches]) if batches else np.empty(0, np.int64)
    padded = sum(int(b.padded.sum()) for b in batches if b.padded is not None)
    return len(batches), ids, [len(b.index) for b in batches], padded


def batches(path: str) -> dict[str, Any]:
    """TableBatches on ETTh1 cut unevenly: every policy gives every rank the same number of batches."""
    full = d.read_csv(path)
    r = full.rank
    # Uneven: keep a rank-dependent prefix of the local rows (rank 0 keeps all, the last rank 1/3).
    keep = full.local_num_rows * (3 - min(r, 2)) // 3
    t = GlobalTable.from_arrow(full.local.slice(0, keep))
    out: dict[str, Any] = {"local_rows": t.local_num_rows, "offset": t.row_offset}
    for even in ("drop", "pad", "rebalance"):
        tb = TableBatches(t, FEATURES, "OT", 256, even=even, shuffle=True, seed=3)
        out[even] = _epoch_ids(tb, 0) + (tb.plan.dropped_per_epoch, tb.plan.padded_per_epoch)
    tg = TableBatches(full, FEATURES, "OT", 100, shuffle="global", seed=9)
    out["global"] = [_epoch_ids(tg, e)[1] for e in (0, 1)]
    tw = TableBatches(full, ["HUFL", "OT"], "OT", 64, window=(96, 24, 2), even="pad")
    n, ids, _, _ = _epoch_ids(tw, 0)
    b0 = next(tw.epoch(0, start=n - 1))
    out["windows"] = (n, ids, b0.x.shape, b0.y.shape)
    # the last window's values equal the rows it covers (halo included at the partition end)
    last = list(tw.epoch(0))[-1]
    out["last_window"] = (int(last.index[-1]), np.asarray(last.x[-1]), np.asarray(last.y[-1]))
    # errors must reach every rank
    for name, kwargs in {
        "strings": {"features": ["date"]},
        "missing": {"features": ["nope"]},
        "window_too_long": {"features": ["OT"], "window": (20000, 1)},
    }.items():
        try:
            TableBatches(full, kwargs["features"], "OT", 8, window=kwargs.get("window"))
            out[name] = None
        except (d.ZeroCopyError, SchemaError, ValueError, RankFailedError) as exc:
            out[name] = type(exc).__name__
    # an empty partition on one rank with drop: a clear error on every rank, no hang
    e = GlobalTable.from_arrow(full.local.slice(0, 0 if r == 1 else 100))
    t0 = time.monotonic()
    try:
        TableBatches(e, FEATURES, "OT", 32, even="drop")
        out["empty_drop"] = None
    except d.DeepRCError as exc:
        out["empty_drop"] = (type(exc).__name__, str(exc), time.monotonic() - t0)
    reb = TableBatches(e, FEATURES, "OT", 32, even="rebalance")
    out["empty_rebalance"] = (reb.num_batches, reb.table.local_num_rows)
    auto = TableBatches(e, FEATURES, "OT", 32)  # the default, even='auto', moves rows onto the empty rank
    out["empty_auto"] = (auto.even, auto.num_batches, auto.table.local_num_rows)
    return out


def predict_exactly_once(sizes: str, root: str) -> dict[str, Any]:
    """Predict ``2 * v`` over an uneven table (rank r holds sizes[r] rows, windows of 3); gather at ``root``."""
    counts = [int(s) for s in sizes.split(",")]
    comm = d.get_communicator()
    start = sum(counts[: comm.rank])
    v = np.arange(start, start + counts[comm.rank], dtype=np.float32)
    t = GlobalTable(pa.table({"v": v, "y": v + 100}), comm)
    rows = d.prediction_batches(t, ["v"], "y", 4)  # 4 rows per batch, padded to the largest rank
    wins = d.prediction_batches(t, "v", "y", 2, window=(3, 1))
    target = None if root == "all" else int(root)
    got = d.predict_all(rows, lambda x: 2 * x[:, 0], root=target)
    got_w = d.predict_all(wins, lambda x: x.sum(axis=1), root=target)
    try:  # a plan that drops samples cannot pass the exactly-once check, on any rank
        drop = TableBatches(t, "v", "y", 4, even="drop")
        d.predict_all(drop, lambda x: x)
        dropped = ""
    except (ValueError, RankFailedError) as exc:  # every rank fails: rank 0 with its reason, the others naming it
        dropped = str(exc)
    out: dict[str, Any] = {"batches": len(rows), "dropped": dropped}
    if got is not None:
        out.update(index=got.index, pred=got.pred, true=got.extra["true"], win_index=got_w.index, win=got_w.pred)
    return out


def numpy_adapter(n_rows: str) -> dict[str, Any]:
    """examples/numpy_adapter.py's NumpyLoader: two epochs, a mid-epoch resume, and predict."""
    from examples.numpy_adapter import NumpyLoader

    comm = d.get_communicator()
    n = int(n_rows)
    cut = [0, 3 * n // 5, n]  # uneven on purpose: 60% on rank 0 (2 ranks)
    lo, hi = cut[comm.rank], cut[comm.rank + 1]
    v = np.arange(lo, hi, dtype=np.float32)
    table = GlobalTable(pa.table({"v": v, "w": -v, "y": v}), comm)
    loader = NumpyLoader(table, ["v", "w"], "y", 8, seed=5, even="rebalance")
    epochs = [np.concatenate([x[:, 0] for x, _ in loader]) for _ in range(2)]  # the 2nd pass: epoch 1
    loader.set_epoch(1)
    it = iter(loader)
    head = [next(it)[0][:, 0] for _ in range(2)]
    state = loader.state_dict()
    again = NumpyLoader(table, ["v", "w"], "y", 8, seed=5, even="rebalance")
    again.load_state_dict(state)
    tail = [x[:, 0] for x, _ in again]
    got = loader.predict(lambda x: x[:, 0] * 10, table, root=None)
    return {
        "epochs": epochs,
        "resumed": np.concatenate(head + tail),
        "batches": len(loader),
        "pred_index": got.index,
        "pred": got.pred,
        "total": table.num_rows,
    }


def balance_and_shard() -> dict[str, Any]:
    """Window balancing, even='auto' on an ordered split, GlobalTable.shard, NaN features (every rank)."""
    comm = d.get_communicator()
    r = comm.rank
    n = 1000
    whole = pa.table({"v": np.arange(n, dtype=np.float32), "w": np.arange(n, dtype=np.float32) * 2})
    table = GlobalTable.shard(whole)  # every rank holds the whole frame; each keeps its share
    out: dict[str, Any] = {"shard": (table.row_offset, table.local_num_rows, float(table.local.column("v")[0].as_py()))}
    try:
        GlobalTable.shard(whole.slice(0, n - r))  # frames of different sizes: an error on every rank
        out["shard_mismatch"] = None
    except ValueError as exc:
        out["shard_mismatch"] = str(exc)
    # an ordered 80/20 split puts the validation rows on the last rank(s); auto spreads both parts
    train, val = table.split([0.8, 0.2])
    tb = TableBatches(train, ["v", "w"], "v", 32, shuffle=False)
    vb = TableBatches(val, ["v", "w"], "v", 32, shuffle=False)
    out["train"] = (tb.even, tb.num_samples, [int(i) for b in tb.epoch(0) for i in b.index])
    out["val"] = (vb.even, vb.num_samples, [int(i) for b in vb.epoch(0) for i in b.index])
    # windows balanced as windows: every start of the global table on exactly one rank, counts within one
    wb = TableBatches(table, ["v"], "v", 16, window=(10, 5), even="rebalance", shuffle=False)
    out["windows"] = (wb.num_samples, [int(i) for b in wb.epoch(0) for i in b.index])
    # NaN in a feature: a clear error on every rank, naming the column and the count
    bad = whole.set_column(1, "w", pa.array(np.where(np.arange(n) % 250 == 7, np.nan, 1.0).astype(np.float32)))
    try:
        TableBatches(GlobalTable.shard(bad), ["v", "w"], "v", 32)
        out["nan"] = None
    except (ValueError, RankFailedError) as exc:
        out["nan"] = str(exc)
    # a NaN target is skipped and counted
    nt = whole.set_column(0, "v", pa.array(np.where(np.arange(n) % 100 == 3, np.nan, 1.0).astype(np.float32)))
    out["nan_target"] = TableBatches(GlobalTable.shard(nt), ["w"], "v", 32).nan_target_skipped
    return out
