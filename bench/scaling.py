"""Weak and strong scaling of the engine's join, group-by and sort on a simulated 2-node SLURM cluster.

    python bench/scaling.py                    # 1, 2, 4 ranks; weak: 1M rows/rank; strong: 2M rows in all
    python bench/scaling.py --rows 500000      # smaller

Like the paper's Fig. 4, but this machine has 2 cores shared by every simulated node, so
wall time alone says little beyond 2 ranks. Each rank therefore reports, per operation,
the time of each phase and the bytes it sent (the exchange's counted serialisation):

* join: shuffle of the left side, shuffle of the right side, local join;
* group-by (sum): local partial aggregation, shuffle of the partials, combine;
* sort: the whole sample sort and, apart, one local sort of the rank's rows (the sort
  runs two of those: before sampling and after the exchange).

1 rank runs as one plain process; 2 ranks as ``srun -N2 --ntasks-per-node=1`` and 4 as
``srun -N2 --ntasks-per-node=2`` from the head node of ``tests/support/cluster.py`` (network
namespaces on a bridge: the ranks talk TCP across nodes). Needs root and slurm-wlm/munge
(``./dev`` installs them). Reported: the slowest rank's time per phase (median of
``--repeats``) and the bytes all ranks sent. ``docs/engine.md`` projects these to the
paper's 8 nodes x 40 cores. Results: ``bench/results/scaling.{json,csv}``.
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
OPS = ("join", "groupby", "sort")


def phases(rows: str, total: str, repeats: str) -> dict[str, Any]:
    """Rank body: the per-phase times (s) and bytes sent of every op, ``repeats`` times each."""
    sys.path.insert(0, str(HERE))
    from deeprc_core.copies import counting_copies
    from deeprc_core.engine.groupby import _combine, _partials, parse_aggs
    from deeprc_core.engine.join import join_owned, plan_join
    from deeprc_core.engine.partition import hash_shuffle
    from deeprc_core.engine.samplesort import local_sort, sample_sort, sort_keys
    from engine import make_tables

    from deeprc_core import get_communicator

    comm = get_communicator()
    left, right = make_tables(comm.rank, int(rows), int(total))
    plan = plan_join(left.schema, right.schema, on="key")
    aggs = parse_aggs({"lval": "sum"})
    out: dict[str, list[dict[str, float]]] = {op: [] for op in OPS}

    def timed(fn: Any) -> tuple[Any, float, int]:
        comm.barrier()
        with counting_copies() as copies:
            t0 = time.perf_counter()
            res = fn()
            dt = time.perf_counter() - t0
        return res, dt, copies.nbytes.get("exchange", 0)

    for _ in range(int(repeats) + 1):  # the first round warms up (connections, imports)
        a, t_l, b_l = timed(lambda: hash_shuffle(left, ["key"], comm, "join (left side)"))
        b, t_r, b_r = timed(lambda: hash_shuffle(right, ["key"], comm, "join (right side)"))
        _, t_j, _ = timed(lambda a=a, b=b: join_owned([a, b], plan))
        out["join"].append({"shuffle_left": t_l, "shuffle_right": t_r, "local_join": t_j, "sent": b_l + b_r})
        p, t_p, _ = timed(lambda: _partials(left, ["key"], aggs))
        s, t_s, b_s = timed(lambda p=p: hash_shuffle(p, ["key"], comm, "groupby"))
        _, t_c, _ = timed(lambda s=s: _combine(s, ["key"], aggs))
        out["groupby"].append({"partials": t_p, "shuffle": t_s, "combine": t_c, "sent": b_s})
        _, t_sort, b_sort = timed(lambda: sample_sort(left, ["key"], True, comm))
        _, t_local, _ = timed(lambda: local_sort(left, sort_keys(["key"], True)))
        out["sort"].append({"sample_sort": t_sort, "one_local_sort": t_local, "sent": b_sort})
    return {"rank": comm.rank, "size": comm.size, "rows": int(rows), "runs": {op: v[1:] for op, v in out.items()}}


def _combine_ranks(per_rank: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per op and phase: the median over repeats of the slowest rank's time; bytes summed over ranks."""
    got: dict[str, dict[str, float]] = {}
    for op in OPS:
        runs = [r["runs"][op] for r in per_rank]
        phases_ = [k for k in runs[0][0] if k != "sent"]
        row: dict[str, float] = {}
        for ph in phases_:
            row[ph] = statistics.median(max(rank[i][ph] for rank in runs) for i in range(len(runs[0])))
        row["wall"] = sum(row[ph] for ph in phases_ if ph != "one_local_sort")
        row["sent_MiB"] = statistics.median(sum(rank[i]["sent"] for rank in runs) for i in range(len(runs[0]))) / 2**20
        got[op] = row
    return got


def _one_rank(rows: int, repeats: int) -> list[dict[str, Any]]:
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import scaling, json; print(json.dumps(scaling.phases({str(rows)!r}, {str(rows)!r}, {str(repeats)!r})))"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "PMI", "RANK", "WORLD_SIZE"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900, check=True)
    return [json.loads(out.stdout.strip().splitlines()[-1])]


def _across(cluster: Any, per_node: int, rows: int, total: int, repeats: int) -> list[dict[str, Any]]:
    from tests.cluster.launch import run_across

    run = run_across(
        cluster,
        "srun",
        Path(__file__),
        "phases",
        per_node=per_node,
        timeout=900,
        args=(str(rows), str(total), str(repeats)),
    )
    return [run.values[r] for r in sorted(run.values)]


def main() -> None:
    """Build the simulated cluster, run every scaling point and write bench/results/scaling.{json,csv}."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="weak scaling: rows per rank and table")
    ap.add_argument("--total", type=int, default=2_000_000, help="strong scaling: rows in all, per table")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.support.cluster import Cluster, unavailable_reason

    why = unavailable_reason()
    if why:  # ./dev bench runs every benchmark: say why this one is left out, and go on
        print(f"[scaling] skipped: {why}", flush=True)
        return
    records = []
    print("[scaling] building a simulated 2-node SLURM cluster (tests/support/cluster.py) ...", flush=True)
    with Cluster(nodes=2) as cluster:
        print(f"[scaling] cluster up; logs under {cluster.root}", flush=True)
        for kind, ranks in [("weak", 1), ("weak", 2), ("weak", 4), ("strong", 1), ("strong", 2), ("strong", 4)]:
            rows = args.rows if kind == "weak" else args.total // ranks
            print(f"[scaling] {kind}: {ranks} rank(s) x {rows:,} rows ...", flush=True)
            per_rank = (
                _one_rank(rows, args.repeats)
                if ranks == 1
                else _across(cluster, ranks // 2, rows, rows * ranks, args.repeats)
            )
            for op, row in _combine_ranks(per_rank).items():
                rec = {"scaling": kind, "ranks": ranks, "nodes": min(ranks, 2), "rows_per_rank": rows, "op": op, **row}
                records.append(rec)
                print(
                    "[scaling]   "
                    + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()),
                    flush=True,
                )
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"cores": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), "repeats": args.repeats}
    (RESULTS / "scaling.json").write_text(json.dumps({**meta, "records": records}, indent=2))
    fields = sorted({k for r in records for k in r}, key=lambda k: (k not in records[0], k))
    with (RESULTS / "scaling.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(records)
    print(f"[scaling] wrote {RESULTS / 'scaling.json'} and .csv")


if __name__ == "__main__":
    main()
