"""Benchmark: Deep RC's distributed join, sort and group-by vs Cylon, and vs pandas, DuckDB, Polars.

Shape of Cylon's join benchmark: two tables, N rows per rank each, two int64 columns
(a uniform random int64 key in [0, total rows) and a payload); the group-by sums the
payload per key. Deep RC runs under ``mpirun`` on 1, 2 (and, labelled oversubscribed, 4)
ranks; where pycylon is built (``./dev cylon``, or DEEPRC_CYLON_PYTHON naming the python
of a conda/HPC-module pycylon), Cylon runs on the same ranks and data, called directly
(``pycylon``: its sort-join, distributed sort, hash group-by) and through Deep RC's
adapter (``deeprc-cylon``), in rounds interleaved with the built-in engine so that load
changes hit every engine alike. The single-process libraries run on the same total data (DuckDB with as many threads as
the machine has cores, the cores the ranks share); Ray Data (``bench/ray_peer.py``, a local
Ray with the same cores, one block per rank) runs the join and the group-by in the first
``--ray-rounds`` rounds.
The single-process baselines run in every round too (their figure: the median of the
rounds' medians). Reported: the median over all rounds and ``--repeats`` of the slowest rank's time, ratios
to pandas, the built-in engine's time over Cylon's and DuckDB's, and each rank's join
memory (see :func:`join_memory`).

    .venv/bin/python bench/engine.py                 # N = 1M rows per rank and table
    .venv/bin/python bench/engine.py --rows 10000000 # the 10M point (needs ~10 GB RAM)
    .venv/bin/python bench/engine.py --memory --rows 1000000 5000000 --ranks 2  # memory only

Results go to bench/results/engine.{json,csv} (``--memory``: engine_memory.json).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from memory_probe import peak_rss, reset_peak, rss

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def make_tables(rank: int, rows: int, total: int, seed: int = 7) -> tuple[pa.Table, pa.Table]:
    """Rank ``rank``'s partitions of the left and right tables (deterministic)."""
    rng = np.random.default_rng([seed, rank])
    left = pa.table({"key": rng.integers(0, total, rows), "lval": rng.integers(0, 1 << 40, rows)})
    right = pa.table({"key": rng.integers(0, total, rows), "rval": rng.integers(0, 1 << 40, rows)})
    return left, right


def join_memory(comm, rows: int) -> dict:
    """Peak RSS growth of one join above the process's RSS just before it, over the rank's input bytes.

    A tiny warm-up join first pays the one-time costs (imports, MPI connections, Arrow's
    thread pools), Arrow's pool returns what it keeps, and the kernel's peak mark is reset
    just before the measured join, so the growth counts what the join itself allocates
    and touches: the hashes, the parts being sent, the send and receive buffers, the
    shuffled sides, Acero's hash table and the output table (also reported alone).
    """
    from deeprc_core.table import GlobalTable

    wl, wr = make_tables(comm.rank, 10_000, 10_000 * comm.size)
    GlobalTable(wl, comm).join(GlobalTable(wr, comm), on="key", engine="arrow")
    del wl, wr
    left_t, right_t = make_tables(comm.rank, rows, rows * comm.size)
    input_bytes = left_t.nbytes + right_t.nbytes
    left, right = GlobalTable(left_t, comm), GlobalTable(right_t, comm)
    del left_t, right_t
    gc.collect()
    pa.default_memory_pool().release_unused()
    comm.barrier()
    base = rss()
    exact = reset_peak()
    before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res = left.join(right, on="key", engine="arrow")
    growth = peak_rss() - base  # VmHWM: since the reset where allowed, else the process's whole life
    return {
        "input_bytes": input_bytes,
        "output_bytes": res.local.nbytes,
        "base_rss_bytes": base,
        "peak_growth_bytes": growth,
        "ratio": growth / input_bytes,
        "exact_peak": exact or before_max <= base,
    }


OPS = ("join", "sort", "groupby")


def _deeprc_ops(comm, left_t: pa.Table, right_t: pa.Table, engine: str) -> dict:
    """The three timed operations through Deep RC's GlobalTable with ``engine``."""
    from deeprc_core.table import GlobalTable

    left, right = GlobalTable(left_t, comm), GlobalTable(right_t, comm)
    return {
        "join": lambda: left.join(right, on="key", engine=engine).local_num_rows,
        "sort": lambda: left.sort("key", engine=engine).local_num_rows,
        "groupby": lambda: left.groupby("key", engine=engine).agg({"lval": "sum"}).local_num_rows,
    }


def _pycylon_ops(comm, left_t: pa.Table, right_t: pa.Table) -> dict:
    """The same operations called on pycylon directly (Cylon's own sort-join, sort and hash group-by)."""
    from deeprc_core.engine.cylon import cylon_env
    from pycylon import DataFrame, Table

    env = cylon_env(comm)
    left = DataFrame(Table.from_arrow(env.context, left_t))
    right = DataFrame(Table.from_arrow(env.context, right_t))
    return {
        "join": lambda: left.merge(right, how="inner", algorithm="sort", on=["key"], env=env).to_arrow().num_rows,
        "sort": lambda: left.sort_values(by=["key"], env=env).to_arrow().num_rows,
        "groupby": lambda: Table.from_arrow(env.context, left_t).groupby(["key"], {"lval": "sum"}).row_count,
    }


def worker(rows: int, repeats: int, memory_only: bool = False, engine: str = "arrow") -> None:
    """One rank: measure join memory (Arrow engine), then time join, sort, groupby; rank 0 prints one JSON line.

    ``engine``: ``arrow`` (the built-in engine), ``cylon`` (Deep RC through its Cylon
    adapter) or ``pycylon`` (pycylon called directly, no Deep RC in the timed path).
    """
    sys.path.insert(0, str(REPO / "deeprc_core" / "src"))
    from deeprc_core import get_communicator

    comm = get_communicator()
    mem = comm.allgather(join_memory(comm, rows)) if engine == "arrow" else []
    if memory_only:
        if comm.rank == 0:
            print(json.dumps({"mem": mem}), flush=True)
        return
    left_t, right_t = make_tables(comm.rank, rows, rows * comm.size)
    ops = _pycylon_ops(comm, left_t, right_t) if engine == "pycylon" else _deeprc_ops(comm, left_t, right_t, engine)
    comm.barrier()
    out_rows = comm.allreduce_int([ops["join"]()])[0]  # warm-up
    times: dict[str, list[float]] = {op: [] for op in OPS}
    for op in OPS:
        for _ in range(repeats):
            comm.barrier()
            t0 = time.perf_counter()
            ops[op]()
            dt = time.perf_counter() - t0
            times[op].append(max(comm.allgather(dt)))
    if comm.rank == 0:
        print(json.dumps({"times": times, "mem": mem, "join_rows": out_rows}), flush=True)


def check_memory(rows: int, ranks: list[int], baselines_too: bool) -> None:
    """Refuse to start a run whose rough peak (6x the data per rank, 10x for one-process baselines) exceeds free RAM."""
    with open("/proc/meminfo") as f:
        avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    per_rank = rows * 2 * 16  # two tables of two int64 columns
    need = max(6 * p * per_rank + (10 * p * per_rank if baselines_too else 0) for p in ranks)
    if need > 0.8 * avail:
        raise SystemExit(
            f"this run may need ~{need / 2**30:.1f} GiB but {avail / 2**30:.1f} GiB are available; use fewer rows or ranks"
        )


def cylon_python() -> tuple[str, dict[str, str]] | None:
    """The cached pycylon environment's python and its LD_LIBRARY_PATH (``./dev cylon``), or None."""
    if os.environ.get("DEEPRC_CYLON_PYTHON"):  # a conda / HPC-module pycylon: its python, env as it is
        return os.environ["DEEPRC_CYLON_PYTHON"], {}
    found = subprocess.run(
        [sys.executable, str(REPO / "tools" / "cylon_build.py"), "--print"], capture_output=True, text=True
    )
    if found.returncode != 0:
        return None
    env_dir = Path(found.stdout.strip())
    py = env_dir / "venv" / "bin" / "python"
    pa_dir = subprocess.check_output(
        [str(py), "-c", "import os, pyarrow; print(os.path.dirname(pyarrow.__file__))"], text=True
    ).strip()
    return str(py), {"LD_LIBRARY_PATH": f"{pa_dir}:{env_dir / 'install' / 'lib'}"}


def run_ranks(
    ranks: int,
    rows: int,
    repeats: int,
    memory_only: bool = False,
    engine: str = "arrow",
    python: tuple[str, dict[str, str]] | None = None,
) -> dict:
    """Launch ``ranks`` workers with mpirun (in ``python``, default this one) and return rank 0's JSON."""
    exe, extra = python or (sys.executable, {})
    env = dict(
        os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_btl="self,vader,tcp"
    )
    env.update(extra)
    env.setdefault("OMPI_MCA_btl_tcp_if_include", "lo")
    env.setdefault("OMPI_MCA_oob_tcp_if_include", "lo")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "deeprc_core" / "src"), env.get("PYTHONPATH", "")])
    cmd = [
        "mpirun",
        "-np",
        str(ranks),
        "--oversubscribe",
        "--bind-to",
        "none",
        exe,
        __file__,
        "--worker",
        "--engine",
        engine,
        "--rows",
        str(rows),
        "--repeats",
        str(repeats),
        *(["--memory"] if memory_only else []),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"mpirun failed:\n{out.stderr[-4000:]}")
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def _median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def baselines(ranks: int, rows: int, repeats: int) -> dict[str, dict[str, float]]:
    """pandas / DuckDB / Polars on the same total data as ``ranks`` ranks of ``rows`` rows."""
    parts = [make_tables(r, rows, rows * ranks) for r in range(ranks)]
    left = pa.concat_tables([p[0] for p in parts]).combine_chunks()
    right = pa.concat_tables([p[1] for p in parts]).combine_chunks()
    out: dict[str, dict[str, float]] = {}
    ldf, rdf = left.to_pandas(), right.to_pandas()
    out["pandas"] = {
        "join": _median_time(lambda: ldf.merge(rdf, on="key", how="inner"), repeats),
        "sort": _median_time(lambda: ldf.sort_values("key", kind="stable"), repeats),
        "groupby": _median_time(lambda: ldf.groupby("key", sort=False).agg({"lval": "sum"}), repeats),
    }
    try:
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads={os.cpu_count() or 1}")  # the cores the ranks get (2 here)
        con.register("l", left)
        con.register("r", right)

        def q(sql: str) -> pa.Table:
            # the relation API hands Arrow over without the extra copy a DB-API result makes (DuckDB >= 1.1)
            rel = con.sql(sql)
            fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
            return fetch()

        out["duckdb"] = {
            "join": _median_time(lambda: q("SELECT * FROM l JOIN r USING (key)"), repeats),
            "sort": _median_time(lambda: q("SELECT * FROM l ORDER BY key"), repeats),
            "groupby": _median_time(lambda: q("SELECT key, sum(lval) FROM l GROUP BY key"), repeats),
        }
    except ImportError:
        pass
    try:
        import polars as pl

        lpl, rpl = pl.from_arrow(left), pl.from_arrow(right)
        out["polars"] = {
            "join": _median_time(lambda: lpl.join(rpl, on="key", how="inner"), repeats),
            "sort": _median_time(lambda: lpl.sort("key", maintain_order=True), repeats),
            "groupby": _median_time(lambda: lpl.group_by("key").agg(pl.col("lval").sum()), repeats),
        }
    except ImportError:
        pass
    return out


def ray_baseline(ranks: int, rows: int, repeats: int) -> dict[str, float] | None:
    """Ray Data's join and group-by on the same data (``bench/ray_peer.py ops`` in its own process), or None."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return None
    cmd = [sys.executable, str(REPO / "bench" / "ray_peer.py"), "ops", "--ranks", str(ranks), "--rows", str(rows)]
    out = subprocess.run([*cmd, "--repeats", str(repeats)], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"ray_peer.py failed:\n{out.stderr[-3000:]}")
    got = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    return {op: got[op] for op in ("join", "groupby")}


def memory_main(rows_list: list[int], ranks: list[int]) -> None:
    """``--memory``: the join's peak RSS growth over input bytes, per rank count and size."""
    records = []
    for rows in rows_list:
        check_memory(rows, ranks, baselines_too=False)
        for p in ranks:
            d = run_ranks(p, rows, 1, memory_only=True)
            worst = max(d["mem"], key=lambda m: m["ratio"])
            rec = {"ranks": p, "rows_per_rank": rows, "ratio_max": worst["ratio"], "per_rank": d["mem"]}
            records.append(rec)
            print(
                f"[memory] {p} ranks, {rows:,} rows/rank/table: input {worst['input_bytes'] / 2**20:.0f} MiB/rank, "
                f"peak growth {worst['peak_growth_bytes'] / 2**20:.0f} MiB = {worst['ratio']:.2f}x input "
                f"(output alone {worst['output_bytes'] / worst['input_bytes']:.2f}x; ratios per rank "
                + ", ".join(f"{m['ratio']:.2f}" for m in d["mem"])
                + ")",
                flush=True,
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "engine_memory.json").write_text(json.dumps({"records": records}, indent=2))
    print(f"wrote {RESULTS / 'engine_memory.json'}")


def side_by_side(records: list[dict]) -> list[str]:
    """Lines stating the built-in engine's time over Cylon's and over DuckDB's, per rank count and op."""
    lines = []
    by = {
        (r["total_rows"], r["op"], r["engine"], r["ranks"] if r["engine"].startswith(("deeprc", "py")) else 0): r
        for r in records
    }
    for (total, op, engine, ranks), r in sorted(by.items()):
        if engine != "deeprc-arrow":
            continue
        parts = []
        for other in ("pycylon", "deeprc-cylon"):
            o = by.get((total, op, other, ranks))
            if o:
                parts.append(f"{r['median_s'] / o['median_s']:.2f}x {other}")
        for lib in ("duckdb", "ray-data"):
            other = by.get((total, op, lib, 0))
            if other:
                parts.append(f"{r['median_s'] / other['median_s']:.2f}x {lib}")
        lines.append(f"[ratio] {op} {ranks} ranks, {total:,} rows: deeprc-arrow takes " + ", ".join(parts))
    return lines


def main() -> None:
    """Parse flags; run the workers (under mpirun) or the whole benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000], help="rows per rank and table (default 1M)")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4], help="rank counts (4 is oversubscribed here)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median reported)")
    ap.add_argument("--memory", action="store_true", help="only measure the join's memory (for every --rows)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every engine (timed runs alternate)")
    ap.add_argument("--no-cylon", action="store_true", help="skip the Cylon columns even where pycylon is built")
    ap.add_argument(
        "--ray-rounds", type=int, default=1, help="rounds that also run Ray Data's join and group-by (0: none)"
    )
    ap.add_argument("--ray-repeats", type=int, default=1, help="timed Ray Data repeats per round (after a warm-up)")
    ap.add_argument("--out", default="engine", help="results file stem under bench/results/ (default: engine)")
    ap.add_argument("--engine", default="arrow", help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.rows[0], args.repeats, args.memory, args.engine)
        return
    if args.memory:
        memory_main(args.rows, args.ranks)
        return
    if len(args.rows) != 1:
        ap.error("timing runs take one --rows value")
    args.rows = args.rows[0]
    check_memory(args.rows, args.ranks, baselines_too=True)
    cores = os.cpu_count() or 1
    cylon = None if args.no_cylon else cylon_python()
    if cylon is None and not args.no_cylon:
        print("[bench] no pycylon built (./dev cylon): the Cylon columns are left out", flush=True)
    records = []
    for p in args.ranks:
        label = f"{p} rank{'s' if p > 1 else ''}" + (" (oversubscribed)" if p > cores else "")
        engines = {"deeprc-arrow": ("arrow", None)}
        if cylon is not None and p > 1:
            engines["pycylon"] = ("pycylon", cylon)
            engines["deeprc-cylon"] = ("cylon", cylon)
        samples: dict[str, dict[str, list[float]]] = {e: {op: [] for op in OPS} for e in engines}
        base_samples: dict[str, dict[str, list[float]]] = {}
        peak_ratio = None
        for rnd in range(args.rounds):  # interleaved, baselines too, so load changes hit every engine alike
            for name, (engine, python) in engines.items():
                print(f"[bench] {name} {label}, round {rnd + 1}/{args.rounds}: N={args.rows:,} ...", flush=True)
                d = run_ranks(p, args.rows, args.repeats, engine=engine, python=python)
                for op in OPS:
                    samples[name][op] += d["times"][op]
                if d["mem"]:
                    peak_ratio = max(m["ratio"] for m in d["mem"])
            round_base = baselines(p, args.rows, args.repeats)
            print(
                f"[bench]   baselines on {p * args.rows:,} rows/table, round {rnd + 1}/{args.rounds}: "
                + ", ".join(round_base),
                flush=True,
            )
            if rnd < args.ray_rounds:
                print(f"[bench]   Ray Data on {p * args.rows:,} rows/table (bench/ray_peer.py) ...", flush=True)
                ray = ray_baseline(p, args.rows, args.ray_repeats)
                if ray is not None:
                    round_base["ray-data"] = ray
            for lib, t in round_base.items():
                for op in t:
                    base_samples.setdefault(lib, {})
                    base_samples[lib].setdefault(op, []).append(t[op])
        base = {lib: {op: statistics.median(v) for op, v in per_op.items()} for lib, per_op in base_samples.items()}
        for op in OPS:
            pandas_t = base["pandas"][op]
            for name in engines:
                ours = statistics.median(samples[name][op])
                records.append(
                    {
                        "ranks": p,
                        "label": f"{name} {label}",
                        "op": op,
                        "engine": name,
                        "rows_per_rank": args.rows,
                        "total_rows": p * args.rows,
                        "median_s": ours,
                        "vs_pandas": pandas_t / ours,
                        "peak_rss_over_input": peak_ratio if op == "join" and name == "deeprc-arrow" else None,
                    }
                )
            for lib, t in base.items():
                if op not in t:  # Ray Data: join and group-by only
                    continue
                records.append(
                    {
                        "ranks": 1,
                        "label": f"{lib} (1 process)",
                        "op": op,
                        "engine": lib,
                        "rows_per_rank": p * args.rows,
                        "total_rows": p * args.rows,
                        "median_s": t[op],
                        "vs_pandas": pandas_t / t[op],
                        "peak_rss_over_input": None,
                    }
                )
    ratios = side_by_side(records)
    for line in ratios:
        print(line)
    print(f"\n{'total rows':>11} {'op':7} {'engine':30} {'median s':>9} {'x pandas':>9}")
    for r in records:
        print(f"{r['total_rows']:>11,} {r['op']:7} {r['label']:30} {r['median_s']:9.3f} {r['vs_pandas']:9.2f}")
    for r in records:
        if r["peak_rss_over_input"] is not None:
            print(f"peak RSS growth during join, {r['label']}: {r['peak_rss_over_input']:.2f}x the rank's input bytes")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(
        json.dumps(
            {"cores": cores, "repeats": args.repeats, "rounds": args.rounds, "records": records, "ratios": ratios},
            indent=2,
        )
    )
    with (RESULTS / f"{args.out}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    print(f"wrote {RESULTS / args.out}.json and .csv")


if __name__ == "__main__":
    main()
