"""Benchmark deeprc-launch's overhead and the multi-pipeline saving (issue #7).

    python bench/launch.py [--reps 3] [--pipelines 11] [--sequential-sample 2] [--full]

1. The same trivial 2-rank gloo job (examples/launch_allreduce.py) under ``torchrun
   --nproc-per-node 2``, ``mpirun -np 2 python`` and ``deeprc-launch --ranks 2``: cold with an
   own pilot (``--no-service``, broken down phase by phase: client session, pilot submission to
   active, agent scheduling and launch, rank start, the job, session close), cold as by default
   (no service up: the launch starts one that stays warm, ``--keep-warm``), and warm (through
   that service): cold launch, warm launch and per-task overhead versus torchrun.
2. The paper's multi-pipeline experiment at laptop scale: N pipelines (a 2-rank join, then a
   2-rank inference task) in one pilot versus one launch (one pilot) per pipeline, one after
   another. Sequential launches cost a pilot start-up each, so by default only
   ``--sequential-sample`` of them run and the mean is scaled to N (``--full`` runs all N).

Writes bench/results/launch.json and launch.csv.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EX = REPO / "examples"
RESULTS = REPO / "bench" / "results"
PY = sys.executable
CLI = [PY, "-m", "deeprc_launch"]
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl_tcp_if_include": "lo",
    "OMPI_MCA_oob_tcp_if_include": "lo",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
}


def say(msg: str) -> None:
    """Progress on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed(
    cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a command; return (seconds, completed process); raise on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=timeout
    )
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return dt, proc


def _rank_times(run_dir: Path) -> tuple[float, float] | None:
    """(wall time the first rank published its address, wall time the last rank exited) of one run."""
    try:
        started = min(p.stat().st_mtime for p in (run_dir / "rendezvous").rglob("rank-*.json"))
        ended = max(json.loads(p.read_text())["time"] for p in run_dir.glob("rank-*.exit"))
    except (OSError, ValueError):
        return None
    return started, ended


def _run_dir(stderr: str) -> Path | None:
    m = re.search(r"logs of every rank: (\S+)/rank-<r>", stderr)
    return Path(m.group(1)) if m else None


def _stamp(stderr: str, pattern: str) -> float | None:
    """Seconds since the client started of the first progress line matching ``pattern``."""
    m = re.search(r"\[deeprc-launch\s+([\d.]+)s\] " + pattern, stderr)
    return float(m.group(1)) if m else None


def cold_phases(t0: float, total: float, stderr: str) -> dict[str, float]:
    """The cold path of an own-pilot run (``-v``), phase by phase, from its progress lines and rank records."""
    phases: dict[str, float] = {}
    m = re.search(
        r"pilot active after ([\d.]+)s \(client session ([\d.]+)s, task manager \(overlapping the pilot's "
        r"bootstrap\) ([\d.]+)s, pilot submitted to active ([\d.]+)s\)",
        stderr,
    )
    submitted = _stamp(stderr, "pilot submitted")
    active = _stamp(stderr, "pilot active")
    running = _stamp(stderr, r"task \S+ running")
    done = _stamp(stderr, r"logs of every rank")
    if m:
        phases["to pilot submission (RP session, pilot manager)"] = submitted or 0.0
        phases["  of which RP session + pilot manager"] = float(m.group(2))
        phases["pilot submitted to active (agent bootstrap and components)"] = float(m.group(4))
        phases["  of which task manager, overlapped with the bootstrap"] = float(m.group(3))
    if active is not None and running is not None:
        phases["pilot active to task executing (agent scheduling, launch)"] = running - active
    closed = re.search(r"session closed in ([\d.]+)s", stderr)
    # The progress clock starts after the interpreter and imports; the rest of the wall time is that.
    offset = total - done - float(closed.group(1)) if done is not None and closed else None
    if offset is not None:
        phases["interpreter start and imports (before the progress clock)"] = offset
    run = _run_dir(stderr)
    times = _rank_times(run) if run else None
    if times and running is not None and offset is not None:
        phases["task executing to ranks started (mpirun, bootstrap, rendezvous)"] = times[0] - t0 - offset - running
        phases["ranks ran (the job itself)"] = times[1] - times[0]
        if done is not None:
            phases["ranks exited to task reported done"] = done - (times[1] - t0 - offset)
    if closed:
        phases["session close"] = float(closed.group(1))
    return {k: round(v, 2) for k, v in phases.items()}


def bench_overheads(reps: int, rows: list[dict[str, object]]) -> dict[str, object]:
    """Part 1: the trivial job cold (own pilot; auto-started service), warm, and under torchrun and mpirun."""
    script = str(EX / "launch_allreduce.py")
    out: dict[str, object] = {}
    # Cold, own pilot closed at the end (the path before --keep-warm), phase by phase.
    t0 = time.time()
    dt, proc = timed([*CLI, "--no-service", "-v", "--ranks", "2", script])
    phases = cold_phases(t0, dt, proc.stderr)
    out["cold_own_pilot_s"], out["cold_own_pilot_phases_s"] = round(dt, 2), phases
    rows.append({"part": "overhead", "case": "cold: own pilot (--no-service)", "rep": 0, "seconds": round(dt, 3)})
    say(f"cold own pilot: {dt:.1f}s; phases {json.dumps(phases)}")
    # Cold, the default: no service up, so the launch starts one that stays warm (--keep-warm).
    dt, proc = timed([*CLI, "--keep-warm", "5", "--ranks", "2", script])
    out["cold_keep_warm_s"] = round(dt, 2)
    rows.append(
        {"part": "overhead", "case": "cold: starts a warm service (default)", "rep": 0, "seconds": round(dt, 3)}
    )
    say(f"cold launch that starts a warm service: {dt:.1f}s")
    runs = {
        "torchrun": (
            [PY, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531", script],
            None,
        ),
        "mpirun": (["mpirun", "-np", "2", "--bind-to", "none", PY, script], MPI_ENV),
        "deeprc-launch warm": ([*CLI, "--ranks", "2", script], None),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    to_ranks: list[float] = []
    try:
        for i in range(reps):
            for name, (cmd, env) in runs.items():
                t0 = time.time()
                dt, proc = timed(cmd, env)
                times[name].append(dt)
                rows.append({"part": "overhead", "case": name, "rep": i, "seconds": round(dt, 3)})
                say(f"{name} rep {i}: {dt:.2f}s")
                run = _run_dir(proc.stderr) if name.startswith("deeprc") else None
                rt = _rank_times(run) if run else None
                if rt:
                    to_ranks.append(rt[0] - t0)
                    rows.append(
                        {
                            "part": "overhead",
                            "case": "warm: client start to ranks started",
                            "rep": i,
                            "seconds": round(rt[0] - t0, 3),
                        }
                    )
    finally:
        t_down, _ = timed([*CLI, "down"])
        say(f"deeprc-launch down: {t_down:.1f}s")
    med = {name: statistics.median(v) for name, v in times.items()}
    out["torchrun_s"], out["mpirun_s"], out["warm_s"] = (
        round(med[k], 3) for k in ("torchrun", "mpirun", "deeprc-launch warm")
    )
    if to_ranks:
        out["warm_client_start_to_ranks_s"] = round(statistics.median(to_ranks), 3)
    out["per_task_overhead_vs_torchrun_s"] = round(med["deeprc-launch warm"] - med["torchrun"], 3)
    out["cold_keep_warm_vs_torchrun_s"] = round(float(out["cold_keep_warm_s"]) - med["torchrun"], 2)  # type: ignore[arg-type]
    out["cold_own_pilot_vs_torchrun_s"] = round(float(out["cold_own_pilot_s"]) - med["torchrun"], 2)  # type: ignore[arg-type]
    out["goals"] = {"cold_le_torchrun_plus_s": 10, "warm_le_torchrun_plus_s": 1}
    return out


def run_pipelines(n: int, workdir: Path) -> tuple[float, float | None]:
    """N pipelines in one pilot; returns (total seconds incl. pilot start-up and close, start-up)."""
    sys.path.insert(0, str(REPO / "deeprc_launch" / "src"))
    from deeprc_launch import Launcher

    t0 = time.perf_counter()
    with Launcher(cores=max(4, 2 * min(n, 4)), walltime=30) as launcher:
        startup = launcher.pilot_startup_s
        handles = []
        for i in range(n):
            out = workdir / f"one-pilot-{i}"
            join = launcher.submit(str(EX / "launch_join.py"), [str(out)], ranks=2, name=f"join{i}")
            handles.append(
                launcher.submit(str(EX / "launch_infer.py"), [str(out)], ranks=2, after=[join], name=f"infer{i}")
            )
        results = launcher.wait(timeout=1800)
        failed = [r.summary() for r in results if not r.ok]
        if failed:
            raise RuntimeError("pipelines failed:\n" + "\n".join(failed))
    return time.perf_counter() - t0, startup


def run_one_launch(i: int, workdir: Path) -> float:
    """One pipeline as its own launch (its own pilot): join then inference."""
    from deeprc_launch import Launcher

    t0 = time.perf_counter()
    with Launcher(walltime=15) as launcher:
        out = workdir / f"seq-{i}"
        join = launcher.submit(str(EX / "launch_join.py"), [str(out)], ranks=2)
        infer = launcher.submit(str(EX / "launch_infer.py"), [str(out)], ranks=2, after=[join])
        res = infer.wait(900)
        if not res.ok:
            raise RuntimeError(res.summary() or str(infer.error))
    return time.perf_counter() - t0


def bench_pipelines(n: int, sample: int, full: bool, rows: list[dict[str, object]]) -> dict[str, float]:
    """Part 2: N pipelines in one pilot versus N separate launches one after another."""
    with tempfile.TemporaryDirectory(prefix="deeprc-bench-") as tmp:
        work = Path(tmp)
        say(f"{n} pipelines in one pilot ...")
        one, startup = run_pipelines(n, work)
        say(f"{n} pipelines in one pilot: {one:.1f}s (pilot start-up {startup:.1f}s)")
        rows.append({"part": "pipelines", "case": f"{n} in one pilot", "rep": 0, "seconds": round(one, 3)})
        k = n if full else max(1, min(sample, n))
        seq = []
        for i in range(k):
            dt = run_one_launch(i, work)
            seq.append(dt)
            rows.append({"part": "pipelines", "case": "one pipeline per launch", "rep": i, "seconds": round(dt, 3)})
            say(f"separate launch {i + 1}/{k}: {dt:.1f}s")
    sequential = statistics.mean(seq) * n
    return {
        "pipelines": n,
        "one_pilot_s": one,
        "one_pilot_startup_s": startup or float("nan"),
        "sequential_launch_mean_s": statistics.mean(seq),
        "sequential_s": sequential,
        "sequential_measured": k,
        "sequential_extrapolated": k < n,
        "speedup": sequential / one,
    }


def main() -> int:
    """Run both parts and write the results."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pipelines", type=int, default=11)
    ap.add_argument("--sequential-sample", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="run all sequential launches instead of scaling a sample")
    ap.add_argument("--skip-overheads", action="store_true")
    ap.add_argument("--skip-pipelines", action="store_true")
    ns = ap.parse_args()
    os.environ.setdefault("DEEPRC_HOME", tempfile.mkdtemp(prefix="deeprc-bench-home-"))
    rows: list[dict[str, object]] = []
    summary: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if not ns.skip_overheads:
        summary["overheads"] = bench_overheads(ns.reps, rows)
    if not ns.skip_pipelines:
        summary["pipelines"] = bench_pipelines(ns.pipelines, ns.sequential_sample, ns.full, rows)
    summary["machine"]["loadavg_at_end"] = os.getloadavg()  # type: ignore[index]
    RESULTS.mkdir(parents=True, exist_ok=True)
    # A skipped part keeps its previous results (each part takes minutes on a small machine).
    with contextlib.suppress(OSError, ValueError):
        old = json.loads((RESULTS / "launch.json").read_text())
        with (RESULTS / "launch.csv").open() as fh:
            old_rows = list(csv.DictReader(fh))
        for part, skipped in (("overheads", ns.skip_overheads), ("pipelines", ns.skip_pipelines)):
            if skipped and part in old:
                summary[part] = old[part]
                summary.setdefault("kept_from_earlier_run", []).append(part)  # type: ignore[union-attr]
                rows.extend(r for r in old_rows if r["part"] == part.rstrip("s") or r["part"] == part)
    (RESULTS / "launch.json").write_text(json.dumps(summary, indent=2))
    with (RESULTS / "launch.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["part", "case", "rep", "seconds"])
        w.writeheader()
        w.writerows(rows)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
