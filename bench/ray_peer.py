"""Ray Data as the peer a user would pick instead of Deep RC: its ops and its torch loader, timed.

Ray is a benchmark dependency only (``requirements/bench.txt``), never a library one. Each
measurement runs in a fresh process (``python bench/ray_peer.py ops|loader ...``) that starts
a local Ray with ``--cpus`` CPUs (2 here, the same cores Deep RC's ranks get), builds the same
data as the Deep RC side (``engine.make_tables`` / ``torch_loader._make_table``), then prints
one JSON line. Ray's start-up is not timed; the epoch and the ops are (``materialize()``
forces the lazy plans). Memory: ``extra_peak_bytes`` is the driver's peak RSS above its RSS
with the table built, and ``system_peak_bytes`` the whole machine's used-memory peak above
the same moment, sampled every 20 ms, which counts Ray's worker processes and its
object store too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _start_ray(cpus: int) -> Any:
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray


def ops(ranks: int, rows: int, repeats: int, cpus: int) -> dict[str, Any]:
    """Ray Data's join and group-by sum on the engine benchmark's tables (``ranks`` x ``rows`` rows each)."""
    import pyarrow as pa
    from engine import make_tables

    parts = [make_tables(r, rows, rows * ranks) for r in range(ranks)]
    left = pa.concat_tables([p[0] for p in parts]).combine_chunks()
    right = pa.concat_tables([p[1] for p in parts]).combine_chunks()
    ray = _start_ray(cpus)
    try:
        # one block per CPU, as Deep RC has one partition per rank; shuffles into one partition per CPU
        # (Ray's default of 200 hash partitions costs its group-by minutes on 2 CPUs)
        lds = ray.data.from_arrow([left.slice(i * rows, rows) for i in range(ranks)]).materialize()
        rds = ray.data.from_arrow([right.slice(i * rows, rows) for i in range(ranks)]).materialize()
        timed = {
            "join": lambda: lds.join(rds, join_type="inner", num_partitions=cpus, on=("key",)).materialize().count(),
            "groupby": lambda: lds.groupby("key", num_partitions=cpus).sum("lval").materialize().count(),
        }
        out: dict[str, Any] = {}
        for name, fn in timed.items():
            got = fn()  # warm-up: the operators' actors and their imports
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            out[name] = statistics.median(ts)
            out[f"{name}_rows"] = got
        return out
    finally:
        ray.shutdown()


def loader(rows: int, features: int, batch: int, packed: bool, mode: str, cpus: int) -> dict[str, Any]:
    """One epoch of ``iter_torch_batches`` over the loader benchmark's table, as a user writes it.

    ``mode``: ``plain`` (in order), ``local`` (``local_shuffle_buffer_size`` = 16 batches) or
    ``global`` (``random_shuffle()`` first, Ray's full shuffle). Features arrive as one
    ``[batch, features]`` tensor: stacked from the columns by ``torch.stack`` (16 columns),
    or Ray's own tensor conversion of the packed column.
    """
    import torch
    from memory_probe import PeakSampler, machine_used, peak_rss, reset_peak, rss
    from torch_loader import _make_table

    torch.set_num_threads(1)
    table, _cols, _y = _make_table(rows, features, packed)
    ray = _start_ray(cpus)
    try:
        ds = ray.data.from_arrow(table)
        names = ["x"] if packed else [f"f{j}" for j in range(features)]
        base = rss()
        exact = reset_peak()
        with PeakSampler(machine_used, every=0.02) as mem:
            t0 = time.perf_counter()
            src = ds.random_shuffle(seed=0) if mode == "global" else ds
            kwargs: dict[str, Any] = {"batch_size": batch}
            if mode == "local":
                kwargs.update(local_shuffle_buffer_size=16 * batch, local_shuffle_seed=0)
            n = 0
            acc = 0.0
            for b in src.iter_torch_batches(**kwargs):
                x = b["x"] if packed else torch.stack([b[c] for c in names], dim=1)
                acc += float(x[-1, -1]) + float(b["y"][-1])  # touch, as the Deep RC side does
                n += 1
            epoch_s = time.perf_counter() - t0
        return {
            "epoch_s": epoch_s,
            "batches": n,
            "extra_peak_bytes": max(peak_rss() - base, 0),
            "peak_exact": exact,
            "system_peak_bytes": mem.growth,
        }
    finally:
        ray.shutdown()


def main() -> None:
    """Parse ``ops``/``loader`` and print one JSON line of measurements."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what")
    o = sub.add_parser("ops")
    o.add_argument("--ranks", type=int, default=2)
    o.add_argument("--rows", type=int, default=1_000_000)
    o.add_argument("--repeats", type=int, default=3)
    o.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    lo = sub.add_parser("loader")
    lo.add_argument("--rows", type=int, default=10_000_000)
    lo.add_argument("--features", type=int, default=16)
    lo.add_argument("--batch", type=int, default=1024)
    lo.add_argument("--packed", action="store_true")
    lo.add_argument("--mode", choices=("plain", "local", "global"), default="plain")
    lo.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    a = p.parse_args()
    if a.what is None:  # ./dev bench runs every bench/*.py: this one only serves engine.py and torch_loader.py
        print("bench/ray_peer.py: Ray Data's side of engine.py and torch_loader.py (run those)")
        return
    if a.what == "ops":
        res = ops(a.ranks, a.rows, a.repeats, a.cpus)
    else:
        res = loader(a.rows, a.features, a.batch, a.packed, a.mode, a.cpus)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
