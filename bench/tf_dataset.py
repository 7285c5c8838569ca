"""Benchmark: one epoch of batches (no model) through deeprc-tf versus plain tf.data.

Side by side, each run in a fresh process::

    deeprc-packed      make_dataset over a table whose 16 features are one fixed_size_list column (zero-copy)
    deeprc-columns     make_dataset over 16 scalar feature columns (stacked per batch inside tf.data; the table
                       is never packed)
    deeprc-shuffled    deeprc-packed with shuffle=True (a new local permutation per epoch; one gather per batch)
    deeprc-columns-shuffled
                       deeprc-columns with shuffle=True (each batch gathered from the 16 columns and stacked)
    from_tensor_slices tf.data.Dataset.from_tensor_slices(np.stack(columns)).batch(B).prefetch(2)
    stacked-gather     the shuffled baseline: tf.data over one stacked tensor (np.stack(columns), a full copy),
                       each batch tf.gather(X, permutation[lo:hi]), .prefetch(2)
    pandas-generator   tf.data.Dataset.from_generator over pandas rows, .batch(B) (run on a subsample of
                       --pandas-rows rows and extrapolated to the full table: it is ~1,000x slower)

Every variant starts from the same Arrow table (``--rows`` x 16 float32 features + 1
float32 target; 648 MiB at the default 10M rows), built before timing. Reported per
variant (medians of ``--repeats`` runs): epoch seconds, batches/s, and the peak RSS
above the RSS once the table exists ("extra"), also as a share of the table's bytes.
Each run records the CPU share the hypervisor stole during it (``bench/cpu_steal.py``), beside
its time; the figures are medians over all runs.

    python bench/tf_dataset.py                     # 10M rows, 3 repeats
    python bench/tf_dataset.py --rows 2000000      # quicker

Results: bench/results/tf_dataset.{json,csv}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cpu_steal import StealMeter, median_steal
from memory_probe import PeakSampler, rss

HERE = Path(__file__).resolve().parent
FEATURES = 16
VARIANTS = (
    "deeprc-packed",
    "deeprc-columns",
    "deeprc-shuffled",
    "deeprc-columns-shuffled",
    "from_tensor_slices",
    "stacked-gather",
    "pandas-generator",
)
#: each shuffled variant's time is also reported against this baseline (the unshuffled ones: from_tensor_slices)
SHUFFLED_BASE = "stacked-gather"


def _table(rows: int, packed: bool) -> Any:
    import numpy as np
    import pyarrow as pa
    from deeprc_core.views import aligned_empty

    rng = np.random.default_rng(0)

    def column(shape: tuple[int, ...]) -> Any:
        # Arrow-allocated (64-byte aligned) buffers, as Parquet/IPC readers produce; filled column by column
        out = aligned_empty(shape, np.float32)
        for j in range(shape[1] if len(shape) > 1 else 1):
            (out[:, j] if len(shape) > 1 else out)[...] = rng.random(rows, dtype=np.float32)
        values = pa.Array.from_buffers(pa.float32(), out.size, [None, pa.py_buffer(out)])
        return pa.FixedSizeListArray.from_arrays(values, shape[1]) if len(shape) > 1 else values

    cols: dict[str, Any] = (
        {"x": column((rows, FEATURES))} if packed else {f"f{j}": column((rows,)) for j in range(FEATURES)}
    )
    cols["y"] = column((rows,))
    return pa.table(cols)


def _child(variant: str, rows: int, batch: int, pandas_rows: int) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.constant(0.0)  # start TF before measuring
    import deeprc_tf
    from deeprc_core import GlobalTable, LocalCommunicator, copy_stats

    run_rows = pandas_rows if variant == "pandas-generator" else rows
    table = _table(run_rows, packed=variant in ("deeprc-packed", "deeprc-shuffled"))
    table_bytes = int(table.nbytes)
    base = rss()
    count = 0
    steal = StealMeter()
    with PeakSampler(rss) as mem:
        steal.start()
        t0 = time.perf_counter()
        if variant.startswith("deeprc"):
            features: Any = "x" if "x" in table.column_names else [f"f{j}" for j in range(FEATURES)]
            shuffle = variant.endswith("-shuffled")
            data = deeprc_tf.make_dataset(
                GlobalTable(table, LocalCommunicator()), features, "y", batch, shuffle=shuffle
            )
            for _ in data.dataset.take(data.steps_per_epoch):
                count += 1
            copies = copy_stats()
            extra_info = {"copies": dict(copies.count), "copied_bytes": dict(copies.nbytes)}
        elif variant == "from_tensor_slices":
            x = np.stack([table.column(f"f{j}").to_numpy() for j in range(FEATURES)], axis=1)
            y = table.column("y").to_numpy()
            for _ in tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).prefetch(2):
                count += 1
            extra_info = {}
        elif variant == "stacked-gather":
            x = tf.constant(np.stack([table.column(f"f{j}").to_numpy() for j in range(FEATURES)], axis=1))
            y = tf.constant(table.column("y").to_numpy())
            steps = -(-run_rows // batch)

            def shuffled(_: Any) -> Any:
                perm = tf.random.shuffle(tf.range(run_rows, dtype=tf.int32))

                def one(i: Any) -> Any:
                    idx = perm[i * batch : tf.minimum((i + 1) * batch, run_rows)]
                    return tf.gather(x, idx), tf.gather(y, idx)

                return tf.data.Dataset.range(steps).map(one)

            for _ in tf.data.Dataset.range(1).flat_map(shuffled).prefetch(2):
                count += 1
            extra_info = {}
        else:
            df = table.to_pandas()
            names = [f"f{j}" for j in range(FEATURES)]

            def rows_gen() -> Any:
                for row in df.itertuples(index=False):
                    yield np.array([getattr(row, n) for n in names], np.float32), np.float32(row.y)

            sig = (tf.TensorSpec((FEATURES,), tf.float32), tf.TensorSpec((), tf.float32))
            ds = tf.data.Dataset.from_generator(rows_gen, output_signature=sig).batch(batch).prefetch(2)
            for _ in ds:
                count += 1
            extra_info = {"measured_rows": run_rows}
        seconds = time.perf_counter() - t0
        steal_share = steal.stop()
    peak_ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    scale = rows / run_rows
    return {
        "variant": variant,
        "rows": rows,
        "batch": batch,
        "batches": int(round(count * scale)),
        "epoch_s": seconds * scale,
        "batches_per_s": count / seconds,
        "samples_per_s": run_rows / seconds,
        "extrapolated": scale != 1,
        # memory is what the measured run used (for pandas-generator: on the subsample, not extrapolated)
        "table_bytes": table_bytes,
        "extra_peak_bytes": mem.peak - base,
        "peak_rss_bytes": max(mem.peak, peak_ru),
        "steal_share": steal_share,
        **extra_info,
    }


def _run_child(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--rows",
        str(args.rows),
        "--batch",
        str(args.batch),
        "--pandas-rows",
        str(args.pandas_rows),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Parse arguments; run each variant --repeats times in fresh processes; write the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pandas-rows", type=int, default=20_000, help="subsample for the slow pandas baseline")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.rows, args.batch, args.pandas_rows)))
        return
    mib = 2**20
    variants = args.variants.split(",")
    all_runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    # Round-robin: repeat i of every variant before repeat i + 1 of any, so that a change in the
    # machine's load falls on all variants alike and their medians stay comparable.
    for i in range(args.repeats):
        for variant in variants:
            r = _run_child(variant, args)
            all_runs[variant].append(r)
            stolen = "" if r["steal_share"] is None else f", {100 * r['steal_share']:.0f}% CPU stolen"
            print(
                f"[{variant}] run {i + 1}/{args.repeats}: {r['epoch_s']:.2f} s/epoch, {r['batches_per_s']:.0f} batches/s, "
                f"extra peak {r['extra_peak_bytes'] / mib:+.0f} MiB{' (extrapolated)' if r['extrapolated'] else ''}"
                f"{stolen}",
                flush=True,
            )
    summary = []
    for variant in variants:
        runs = all_runs[variant]
        med = {k: statistics.median(r[k] for r in runs) for k in ("epoch_s", "batches_per_s", "extra_peak_bytes")}
        table_mib = runs[0]["table_bytes"] / mib
        summary.append(
            {
                "variant": variant,
                "rows": args.rows,
                "batch": args.batch,
                "repeats": args.repeats,
                "extrapolated": runs[0]["extrapolated"],
                "table_mib": table_mib,
                "epoch_s": med["epoch_s"],
                "batches_per_s": med["batches_per_s"],
                "extra_peak_mib": med["extra_peak_bytes"] / mib,
                "extra_peak_share": med["extra_peak_bytes"] / mib / table_mib,
                "steal_share": median_steal(runs),
                "runs": runs,
            }
        )
    base = next((s for s in summary if s["variant"] == "from_tensor_slices"), None)
    shuffled_base = next((s for s in summary if s["variant"] == SHUFFLED_BASE), None)
    print(
        f"\n{'variant':24} {'epoch s':>9} {'batches/s':>10} {'vs slices':>9} {'time vs base':>12} "
        f"{'extra MiB':>10} {'% table':>8}  {'stolen':>6}"
    )
    for s in summary:
        s["speedup_vs_from_tensor_slices"] = s["batches_per_s"] / base["batches_per_s"] if base else None
        # time against the baseline of its kind: the stacked tensor's per-batch gather for a shuffled
        # variant, from_tensor_slices for an unshuffled one (the targets: <= 1.5x and <= 2x)
        own = shuffled_base if s["variant"].endswith("-shuffled") else base
        s["time_vs_baseline"] = s["epoch_s"] / own["epoch_s"] if own and own is not s else None
        s["baseline"] = own["variant"] if own and own is not s else None
        ratio = f"{s['speedup_vs_from_tensor_slices']:.2f}x" if base else "-"
        vs = f"{s['time_vs_baseline']:.2f}x" if s["time_vs_baseline"] else "-"
        note = (
            f" (time extrapolated; memory of the {s['runs'][0]['measured_rows']}-row subsample)"
            if s["extrapolated"]
            else ""
        )
        stolen = "-" if s["steal_share"] is None else f"{100 * s['steal_share']:.0f}%"
        print(
            f"{s['variant']:24} {s['epoch_s']:9.2f} {s['batches_per_s']:10.1f} {ratio:>9} {vs:>12} "
            f"{s['extra_peak_mib']:+10.0f} {100 * s['extra_peak_share']:7.1f}%  {stolen:>6}{note}"
        )
    print("stolen: the median share of the machine's CPU time the hypervisor took during the runs (/proc/stat)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tf_dataset.json").write_text(json.dumps(summary, indent=2, default=str))
    with (args.out / "tf_dataset.csv").open("w", newline="") as f:
        w = csv.writer(f)
        cols = [
            "variant",
            "rows",
            "batch",
            "repeats",
            "extrapolated",
            "table_mib",
            "epoch_s",
            "batches_per_s",
            "speedup_vs_from_tensor_slices",
            "baseline",
            "time_vs_baseline",
            "steal_share",
            "extra_peak_mib",
            "extra_peak_share",
        ]
        w.writerow(cols)
        for s in summary:
            w.writerow([s[c] for c in cols])
    print(f"wrote {args.out / 'tf_dataset.json'} and .csv")


if __name__ == "__main__":
    main()
