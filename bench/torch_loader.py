"""One epoch of batches, no model: DeepRCDataModule's train loader versus the usual PyTorch ways.

    python bench/torch_loader.py                 # 10M rows x 16 float32 features + 1 target (648 MiB)
    python bench/torch_loader.py --rows 2000000  # smaller

Variants (each run in a fresh process, unshuffled and shuffled, median of ``--repeats``; the repeats
run round-robin over the variants, so that load changes fall on all of them alike):

* ``deeprc``          DeepRCDataModule over a table with one packed feature column (zero-copy views)
* ``deeprc_columns``  the same over 16 separate feature columns (batches stacked from the column views by
                      the compiled kernel, ~1 MiB of batches per copy, in its native thread ahead of the
                      loop: one counted copy of those batches, never of the table; the report records
                      ``stack_kernel``, "compiled" or "numpy")
* ``ideal``           (a) hand-slicing ``torch.from_numpy(np.stack(columns))`` (needs a full copy first)
* ``tensordataset``   (b) ``TensorDataset`` + a default ``DataLoader(batch_size=1024)``
* ``pandas``          (c) a map-style Dataset over a pandas DataFrame (per-row ``__getitem__``)
* ``hf_datasets``     (d) Hugging Face ``datasets`` with ``with_format("torch")``, skipped if not installed
* ``ray_data*``       (e) Ray Data's ``from_arrow(table).iter_torch_batches(batch_size=1024)`` on a local Ray
                      with the machine's cores (``bench/ray_peer.py``): 16 columns stacked with
                      ``torch.stack``, or the packed column; shuffled with ``random_shuffle()``
                      (a full shuffle, like Deep RC's) or ``local_shuffle_buffer_size``. Extra memory
                      also counts Ray's workers and object store (``system_peak``, the machine's
                      used memory). Skipped if ray is not installed (``requirements/bench.txt``).

The run also measures the machine's single-thread memcpy bandwidth (``memcpy_GBps``, best of
5 copies of 256 MiB) and reports each loader's batch rate in bytes per second as a fraction
of it (``fraction_of_memcpy``): the physical limit of an epoch that must produce every byte once.

The slow baselines (b, c, d) run on a subsample (``--sub-b``, ``--sub-c``, ``--sub-d`` rows) and are
extrapolated linearly to the full size; the report labels them. "Touching" a batch reads one
element of x and y, so gathers happen but no arithmetic is timed. Extra memory is the peak
resident set above the resident set right after the table was built (Linux ``VmHWM``
reset through ``/proc/self/clear_refs``), i.e. what the loader adds on top of the table.
Each run also records the share of CPU time the hypervisor stole during its epoch (``steal_share``,
see ``cpu_steal.py``): on a capped VM the two-thread deeprc_columns path loses more to it than the
one-core ideal. The figures are medians over all runs; the report lists every run.
Results: ``bench/results/torch_loader.{json,csv}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from cpu_steal import StealMeter, median_steal
from memory_probe import peak_rss, reset_peak, rss

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
VARIANTS = (
    "deeprc",
    "deeprc_columns",
    "ideal",
    "tensordataset",
    "pandas",
    "hf_datasets",
    "ray_data",
    "ray_data_packed",
    "ray_data_local",
)
#: Ray Data variants (bench/ray_peer.py): full size, ``--slow-repeats`` runs; ``ray_data_local`` is shuffled only.
RAY = {"ray_data": False, "ray_data_packed": True, "ray_data_local": False}
LABELS = {
    "deeprc": "DeepRCDataModule, packed column",
    "deeprc_columns": "DeepRCDataModule, 16 separate columns (stacked ahead by the kernel)",
    "ideal": "(a) slicing one stacked tensor",
    "tensordataset": "(b) TensorDataset + DataLoader",
    "pandas": "(c) pandas map-style Dataset",
    "hf_datasets": "(d) HF datasets with_format('torch')",
    "ray_data": "(e) Ray Data iter_torch_batches, 16 columns (shuffled: random_shuffle())",
    "ray_data_packed": "(e) Ray Data iter_torch_batches, packed (shuffled: random_shuffle())",
    "ray_data_local": "(e) Ray Data, 16 columns, local_shuffle_buffer_size=16 batches",
}


# ------------------------------------------------------------------ memory
# ------------------------------------------------------------------ worker
def _make_table(rows: int, features: int, packed: bool) -> tuple[Any, list[np.ndarray], np.ndarray]:
    """The table, generated in place (no transient copies): its feature columns and target as numpy."""
    import pyarrow as pa

    rng = np.random.default_rng(0)
    y = np.empty(rows, dtype=np.float32)
    rng.random(out=y, dtype=np.float32)
    if packed:
        x = np.empty((rows, features), dtype=np.float32)
        rng.random(out=x, dtype=np.float32)
        values = pa.Array.from_buffers(pa.float32(), rows * features, [None, pa.py_buffer(x)])
        table = pa.table({"x": pa.FixedSizeListArray.from_arrays(values, features), "y": y})
        cols = [x[:, j] for j in range(features)]
    else:
        cols = []
        for _ in range(features):
            c = np.empty(rows, dtype=np.float32)
            rng.random(out=c, dtype=np.float32)
            cols.append(c)
        table = pa.table({**{f"f{j}": cols[j] for j in range(features)}, "y": y})
    return table, cols, y


def _epoch(batches: Any) -> int:
    n = 0
    acc = 0.0
    for x, y in batches:
        acc += float(x[-1, -1]) + float(y[-1])  # touch: the batch exists (gathered if shuffled)
        n += 1
    return n


def run_worker(variant: str, rows: int, features: int, batch: int, shuffle: bool) -> dict[str, Any]:
    """Build the table, then time one epoch of ``variant``; returns the measurements."""
    import torch

    torch.set_num_threads(1)
    # Imports first, so the memory measured below is the loader's, not the libraries'.
    if variant.startswith("deeprc"):
        import deeprc_core as dc
        from deeprc_torch import DeepRCDataModule
    elif variant == "pandas":
        import pandas as pd
    elif variant == "hf_datasets":
        import datasets
    packed = variant == "deeprc"
    table, cols, y = _make_table(rows, features, packed)
    table_bytes = int(table.nbytes)
    base = rss()
    exact_peak = reset_peak()
    t0 = time.perf_counter()
    if variant in ("deeprc", "deeprc_columns"):
        feats = "x" if packed else [f"f{j}" for j in range(features)]
        dm = DeepRCDataModule(dc.GlobalTable(table), feats, "y", batch, shuffle=shuffle, seed=0)
        dm.setup("fit")
        loader: Any = dm.train_dataloader()
    elif variant == "ideal":
        X = torch.from_numpy(np.stack(cols, axis=1))
        Y = torch.from_numpy(y)

        def ideal() -> Any:
            order = torch.randperm(rows) if shuffle else None
            for lo in range(0, rows, batch):
                if order is None:
                    yield X[lo : lo + batch], Y[lo : lo + batch]
                else:
                    idx = order[lo : lo + batch]
                    yield X[idx], Y[idx]

        loader = ideal()
    elif variant == "tensordataset":
        from torch.utils.data import DataLoader, TensorDataset

        X = torch.from_numpy(np.stack(cols, axis=1))
        loader = DataLoader(TensorDataset(X, torch.from_numpy(y)), batch_size=batch, shuffle=shuffle)
    elif variant == "pandas":
        from torch.utils.data import DataLoader, Dataset

        df = pd.DataFrame({**{f"f{j}": cols[j] for j in range(features)}, "y": y})

        class FrameDataset(Dataset):
            def __len__(self) -> int:
                return len(df)

            def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
                row = df.iloc[i]
                return torch.tensor(row.iloc[:features].to_numpy(dtype=np.float32)), torch.tensor(
                    float(row.iloc[features])
                )

        loader = DataLoader(FrameDataset(), batch_size=batch, shuffle=shuffle)
    elif variant == "hf_datasets":
        ds = datasets.Dataset(table).with_format("torch")
        feats_ = [f"f{j}" for j in range(features)]

        def hf() -> Any:
            from torch.utils.data import DataLoader

            for b in DataLoader(ds, batch_size=batch, shuffle=shuffle):
                yield torch.stack([b[f] for f in feats_], dim=1), b["y"]

        loader = hf()
    else:
        raise ValueError(variant)
    setup_s = time.perf_counter() - t0
    steal = StealMeter()
    steal.start()
    t1 = time.perf_counter()
    n = _epoch(loader)
    epoch_s = time.perf_counter() - t1
    steal_share = steal.stop()
    peak = peak_rss()
    return {
        "variant": variant,
        "shuffle": shuffle,
        "rows": rows,
        "batches": n,
        "setup_s": setup_s,
        "epoch_s": epoch_s,
        "batches_per_s": n / epoch_s if epoch_s else float("inf"),
        "samples_per_s": rows / epoch_s if epoch_s else float("inf"),
        "table_bytes": table_bytes,
        "extra_peak_bytes": max(peak - base, 0),
        "peak_exact": exact_peak,
        "steal_share": steal_share,
    }


# ------------------------------------------------------------------ driver
def _stack_kernel() -> str:
    """Which implementation stacked the separate columns: "compiled" or "numpy" (deeprc_core.stacking)."""
    from deeprc_core.stacking import STACK_KERNEL

    return STACK_KERNEL


def _available(variant: str) -> bool:
    import importlib.util

    if variant == "hf_datasets":
        return importlib.util.find_spec("datasets") is not None
    if variant in RAY:
        return importlib.util.find_spec("ray") is not None
    return True


def memcpy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes per second of one thread copying a ``mib`` MiB buffer (the best of ``repeats``)."""
    src = np.ones(mib * MiB // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # first touch of the pages
    best = min(_timed_copy(dst, src) for _ in range(repeats))
    return src.nbytes / best


def _timed_copy(dst: np.ndarray, src: np.ndarray) -> float:
    t0 = time.perf_counter()
    np.copyto(dst, src)
    return time.perf_counter() - t0


def _spawn_ray(variant: str, rows: int, args: argparse.Namespace, shuffle: bool) -> dict[str, Any]:
    mode = "plain" if not shuffle else "local" if variant == "ray_data_local" else "global"
    cmd = [sys.executable, str(HERE / "ray_peer.py"), "loader", "--rows", str(rows), "--mode", mode]
    cmd += ["--features", str(args.features), "--batch", str(args.batch)] + (["--packed"] if RAY[variant] else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    res = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    n, epoch = res["batches"], res["epoch_s"]
    return {
        **res,
        "variant": variant,
        "shuffle": shuffle,
        "rows": rows,
        "setup_s": 0.0,
        "batches_per_s": n / epoch,
        "samples_per_s": rows / epoch,
        "steal_share": None,
    }


def _spawn(variant: str, rows: int, args: argparse.Namespace, shuffle: bool) -> dict[str, Any]:
    if variant in RAY:
        return _spawn_ray(variant, rows, args, shuffle)
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        "--rows",
        str(rows),
        "--features",
        str(args.features),
        "--batch",
        str(args.batch),
        "--shuffle",
        str(int(shuffle)),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--slow-repeats", type=int, default=1, help="repeats of the subsampled baselines")
    p.add_argument("--sub-b", type=int, default=500_000, help="rows for (b) TensorDataset")
    p.add_argument("--sub-c", type=int, default=20_000, help="rows for (c) pandas")
    p.add_argument("--sub-d", type=int, default=500_000, help="rows for (d) HF datasets")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--shuffle", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.rows, args.features, args.batch, bool(args.shuffle))))
        return
    sub = {"tensordataset": args.sub_b, "pandas": args.sub_c, "hf_datasets": args.sub_d}
    rows_out: list[dict[str, Any]] = []
    skipped: list[str] = []
    variants = []
    for variant in args.variants.split(","):
        if _available(variant):
            variants.append(variant)
        else:
            skipped.append(f"{variant}: the 'datasets' package is not installed")
            print(f"skip {variant}: not installed", flush=True)
    load_at_start = os.getloadavg()
    for shuffle in (False, True):
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        # Round-robin: repeat r of every variant before repeat r + 1 of any, so that a change in the
        # machine's load during the run falls on all variants alike (the medians are then comparable).
        for r in range(max(args.repeats, args.slow_repeats)):
            for variant in variants:
                if variant == "ray_data_local" and not shuffle:
                    continue  # a shuffle buffer only exists to shuffle
                if r >= (args.slow_repeats if variant in sub or variant in RAY else args.repeats):
                    continue
                res = _spawn(variant, min(sub.get(variant, args.rows), args.rows), args, shuffle)
                runs[variant].append(res)
                stolen = "" if res["steal_share"] is None else f", {100 * res['steal_share']:.0f}% CPU stolen"
                print(
                    f"{variant:15s} shuffle={shuffle!s:5s} run {r + 1}: {res['epoch_s']:.3f} s, "
                    f"{res['batches_per_s']:.0f} batches/s, +{res['extra_peak_bytes'] / MiB:.0f} MiB{stolen}",
                    flush=True,
                )
        for variant in variants:
            rows = min(sub.get(variant, args.rows), args.rows)
            done = runs[variant]
            if not done:
                continue
            scale = args.rows / rows
            med = {k: statistics.median(x[k] for x in done) for k in ("epoch_s", "setup_s", "extra_peak_bytes")}
            rows_out.append(
                {
                    "variant": variant,
                    "label": LABELS[variant],
                    "shuffle": shuffle,
                    "measured_rows": rows,
                    "extrapolated": scale != 1,
                    "epoch_s": med["epoch_s"] * scale,
                    "setup_s": med["setup_s"] * scale,
                    "batches_per_s": done[0]["batches"] / med["epoch_s"],
                    "samples_per_s": rows / med["epoch_s"],
                    "extra_peak_MiB": med["extra_peak_bytes"] / MiB,
                    "table_MiB": args.rows * (args.features + 1) * 4 / MiB,
                    "repeats": len(done),
                    "epoch_s_runs": [x["epoch_s"] * scale for x in done],
                    "steal_share_runs": [x["steal_share"] for x in done],
                    "steal_share": median_steal(done),
                    "system_peak_MiB": (
                        statistics.median(x["system_peak_bytes"] for x in done) / MiB
                        if "system_peak_bytes" in done[0]
                        else None
                    ),
                }
            )
    ideal = {r["shuffle"]: r for r in rows_out if r["variant"] == "ideal"}
    for r in rows_out:
        r["extra_peak_pct_of_table"] = (
            100 * r["extra_peak_MiB"] / r["table_MiB"] if r["variant"].startswith("deeprc") else None
        )
        base = ideal.get(r["shuffle"])
        r["time_vs_ideal"] = r["epoch_s"] / base["epoch_s"] if base else None
    print("measuring memcpy bandwidth (one thread, 256 MiB) ...", flush=True)
    memcpy = memcpy_bandwidth()
    batch_bytes = args.rows * (args.features + 1) * 4  # every epoch produces each feature and target byte once
    for r in rows_out:
        r["batch_GBps"] = batch_bytes / r["epoch_s"] / 1e9
        r["fraction_of_memcpy"] = batch_bytes / r["epoch_s"] / memcpy
    for r in rows_out:
        deeprc = next((d for d in rows_out if d["variant"] == "deeprc" and d["shuffle"] == r["shuffle"]), None)
        r["deeprc_speedup"] = r["epoch_s"] / deeprc["epoch_s"] if deeprc else None
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": load_at_start, "loadavg_at_end": os.getloadavg()},
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": args.rows,
        "features": args.features,
        "batch": args.batch,
        "skipped": skipped,
        "stack_kernel": _stack_kernel(),
        "memcpy_GBps": memcpy / 1e9,
        "results": rows_out,
    }
    (args.out / "torch_loader.json").write_text(json.dumps(report, indent=2))
    with (args.out / "torch_loader.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows_out[0]))
        w.writeheader()
        w.writerows(rows_out)
    print(f"\n{args.rows:,} rows x {args.features} features + 1 target, batch {args.batch} (one process)")
    print(
        f"{'variant':46s} {'shuffle':7s} {'epoch s':>9s} {'batches/s':>10s} {'+MiB':>7s} {'x ideal':>8s} {'÷ deeprc':>9s}"
        f" {'stolen':>7s} {'of memcpy':>9s}"
    )
    for r in rows_out:
        tag = " (extrapolated)" if r["extrapolated"] else ""
        stolen = "-" if r["steal_share"] is None else f"{100 * r['steal_share']:.0f}%"
        print(
            f"{r['label'] + tag:46s} {r['shuffle']!s:7s} {r['epoch_s']:9.3f} {r['batches_per_s']:10.0f} "
            f"{r['extra_peak_MiB']:7.0f} {r['time_vs_ideal'] or 0:8.2f} {r['deeprc_speedup'] or 0:9.1f}"
            f" {stolen:>7s} {100 * r['fraction_of_memcpy']:8.0f}%"
        )
    print(f"memcpy: {memcpy / 1e9:.2f} GB/s (one thread); 'of memcpy': the epoch's bytes per second over it")
    print("stolen: the median share of the machine's CPU time the hypervisor took during the epochs (/proc/stat)")
    for s in skipped:
        print("skipped:", s)


if __name__ == "__main__":
    main()
