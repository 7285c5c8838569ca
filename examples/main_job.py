"""The project's main job: pipeline A (ETT, Lightning) then pipeline B (CAMELS, Keras), 2 ranks each.

``python -m examples.main_job`` (what ``./dev demo`` runs) starts one local RADICAL-Pilot
pilot with deeprc-launch's pipeline API (:class:`deeprc_launch.Launcher`) and runs the two
pipelines in it as 2-rank tasks, B after A; it streams rank 0's progress and ends by
printing both results tables, the plots and the logs. ``--launcher deeprc`` instead runs
each pipeline with the ``deeprc-launch --ranks 2`` command (one pilot per pipeline). Sizes: the default finishes in
about 10 minutes on 2 CPU cores; ``--quick`` in about a minute per pipeline; ``--full``
trains every model longer (an hour or more on 2 cores).

``--launcher mpirun|torchrun`` runs the same scripts under those launchers instead;
``--compare`` runs each pipeline under all three and reports the wall times (the
launcher's overhead is the wall time minus the time the job itself measured);
``--publish`` keeps what the README and docs/results.md quote: the metrics, timings and
summary under docs/results/<size>[-compare]/ and the plots in docs/img/.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from deeprc_core.network import free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
PIPELINES = {"ett": "examples/ett_forecast.py", "camels": "examples/camels_lstm.py"}
LAUNCHERS = ("pipeline", "deeprc", "mpirun", "torchrun")


def launch_command(launcher: str, ranks: int, script: str, args: list[str], log_dir: Path) -> list[str]:
    """The command line that runs ``script args`` on ``ranks`` ranks with ``launcher``."""
    py = sys.executable
    if launcher == "deeprc":
        exe = shutil.which("deeprc-launch") or str(Path(py).parent / "deeprc-launch")
        return [exe, "--ranks", str(ranks), "--log-dir", str(log_dir), "--python", py, script, *args]
    if launcher == "mpirun":
        return [
            "mpirun",
            "-np",
            str(ranks),
            "--oversubscribe",
            "--bind-to",
            "none",
            "-x",
            "PYTHONPATH",
            py,
            script,
            *args,
        ]
    if launcher == "torchrun":
        exe = shutil.which("torchrun") or str(Path(py).parent / "torchrun")
        return [exe, "--nproc-per-node", str(ranks), "--master-port", str(free_port("127.0.0.1")), script, *args]
    raise ValueError(f"launcher {launcher!r}: choose one of {LAUNCHERS}")


def job_env() -> dict[str, str]:
    """Environment for the ranks: the repo importable, unbuffered output, Open MPI allowed as root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(PYTHONUNBUFFERED="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    return env


def run_pipeline(
    name: str, launcher: str, ranks: int, size_args: list[str], extra: list[str], timeout: float, out: Path
) -> dict:
    """Run one pipeline with one launcher; return wall time, the job's own time and the output paths."""
    out.mkdir(parents=True, exist_ok=True)
    log_dir = out / "logs"
    cmd = launch_command(launcher, ranks, PIPELINES[name], [*size_args, "--out", str(out), *extra], log_dir)
    print(f"\n[main_job] {name} via {launcher}: {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    try:
        rc = subprocess.run(cmd, cwd=REPO, env=job_env(), timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    wall = time.perf_counter() - t0
    info: dict = {
        "pipeline": name,
        "launcher": launcher,
        "ranks": ranks,
        "exit_code": rc,
        "wall_s": wall,
        "out": str(out),
    }
    timings = out / "timings.json"
    if rc == 0 and timings.exists():
        job = json.loads(timings.read_text())
        info["job_s"] = job["total_s"]
        info["overhead_s"] = wall - job["total_s"]  # launcher + interpreter start + imports
        info["stages_s"] = job["stages_s"]
    info["logs"] = str(log_dir) if launcher == "deeprc" else "(streamed above)"
    print(
        f"[main_job] {name} via {launcher}: exit {rc}, wall {wall:.1f} s"
        + (f", job {info['job_s']:.1f} s, overhead {info['overhead_s']:.1f} s" if "job_s" in info else ""),
        flush=True,
    )
    return info


def _follow(path: Path, pos: int) -> int:
    """Print what ``path`` gained since byte ``pos``; return the new position."""
    try:
        with path.open("rb") as fh:
            fh.seek(pos)
            chunk = fh.read()
    except FileNotFoundError:
        return pos
    if chunk:
        sys.stdout.write(chunk.decode(errors="replace"))
        sys.stdout.flush()
    return pos + len(chunk)


def run_in_one_pilot(names: list[str], ranks: int, size_args: list[str], extra: dict, timeout: float) -> list[dict]:
    """Run the pipelines as dependent 2-rank tasks of one pilot (deeprc-launch's pipeline API)."""
    from deeprc_launch import Launcher

    t0 = time.perf_counter()
    infos: list[dict] = []
    with Launcher(
        progress=lambda m: print(f"[deeprc-launch {time.perf_counter() - t0:6.1f}s] {m}", flush=True)
    ) as launcher:
        startup = launcher.pilot_startup_s
        handles = []
        after: list = []
        for name in names:
            out = RESULTS / name
            out.mkdir(parents=True, exist_ok=True)
            args = [*size_args, "--out", str(out), *extra[name]]
            handle = launcher.submit(
                str(REPO / PIPELINES[name]),
                args,
                ranks=ranks,
                after=after,
                name=name,
                env={"PYTHONPATH": str(REPO)},
                timeout=timeout,
            )
            print(f"[main_job] submitted {name}: {PIPELINES[name]} {shlex.join(args)} ({ranks} ranks)", flush=True)
            handles.append((name, handle, out))
            after = [handle]
        for name, handle, out in handles:
            pos, started = 0, None
            stdout = Path(handle.stdout_path)
            while not handle.done():
                if started is None and stdout.exists():
                    started = time.perf_counter()
                pos = _follow(stdout, pos)
                time.sleep(0.5)
            _follow(stdout, pos)
            result = handle.wait()
            ended = time.perf_counter()
            info: dict = {
                "pipeline": name,
                "launcher": "pipeline",
                "ranks": ranks,
                "exit_code": result.exit_code,
                "out": str(out),
                "logs": handle.run_dir,
                "pilot_startup_s": startup,
            }
            if started is not None:
                info["wall_s"] = ended - started  # from the task's first output to its end, as seen here
            timings = out / "timings.json"
            if result.ok and timings.exists():
                job = json.loads(timings.read_text())
                info["job_s"], info["stages_s"] = job["total_s"], job["stages_s"]
                if "wall_s" in info:
                    info["overhead_s"] = info["wall_s"] - job["total_s"]
            if not result.ok:
                print(result.summary(), file=sys.stderr, flush=True)
            print(f"[main_job] {name}: exit {result.exit_code}, logs {handle.run_dir}", flush=True)
            infos.append(info)
    close = time.perf_counter()
    for info in infos:
        info["pilot_total_s"] = close - t0
    print(
        f"[main_job] pilot: active after {startup or float('nan'):.1f} s; session total {close - t0:.1f} s", flush=True
    )
    return infos


#: Where ``--publish`` keeps the files the README and docs/results.md quote (committed).
PUBLISHED = REPO / "docs" / "results"
#: What each pipeline run writes that the tables quote.
RUN_FILES = ("metrics.md", "metrics.csv", "metrics.json", "timings.json")


def _repo_relative(value: object) -> object:
    """A path inside the repo as ``results/...``, one in the home folder as ``~/...``; anything else unchanged."""
    if isinstance(value, str) and value.startswith(str(REPO) + os.sep):
        return os.path.relpath(value, REPO)
    home = str(Path.home())
    if isinstance(value, str) and value.startswith(home + os.sep):
        return "~" + value[len(home) :]
    return value


def publish(summary: dict, main_launcher: str) -> list[Path]:
    """Copy what the docs quote into ``docs/results/<size>[-compare]/`` (and demo-size plots into docs/img/).

    Per run: metrics.{md,csv,json} (main launcher) and timings.json (every launcher), under
    ``<pipeline>/`` or ``<pipeline>-<launcher>/``; plus this run's ``main_job.json`` with
    repo-relative paths. Returns the files written.
    """
    compare = len({r["launcher"] for r in summary["runs"]}) > 1
    dest = PUBLISHED / (summary["size"] + ("-compare" if compare else ""))
    if dest.exists():
        shutil.rmtree(dest)  # a publication is one run: never mix files of two runs
    copied: list[Path] = []
    for run in summary["runs"]:
        out = Path(run["out"])
        main = run["launcher"] == main_launcher
        sub = dest / (run["pipeline"] if main else f"{run['pipeline']}-{run['launcher']}")
        sub.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES if main else ("timings.json",):
            if (out / name).exists():
                copied.append(Path(shutil.copy2(out / name, sub / name)))
        if main and summary["size"] == "demo":  # docs/results.md shows the demo-size plots
            img = REPO / "docs" / "img"
            img.mkdir(parents=True, exist_ok=True)
            for png in sorted((out / "plots").glob("*.png")):
                copied.append(Path(shutil.copy2(png, img / png.name)))
    clean = {
        **summary,
        "runs": [{k: _repo_relative(v) for k, v in run.items()} for run in summary["runs"]],
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    (dest / "main_job.json").write_text(json.dumps(clean, indent=2) + "\n")
    copied.append(dest / "main_job.json")
    return copied


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the main job."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--launcher",
        default="pipeline",
        choices=LAUNCHERS,
        help="pipeline: both in one pilot (Launcher API); deeprc: one deeprc-launch command each; or mpirun/torchrun",
    )
    p.add_argument("--ranks", type=int, default=2)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="about a minute per pipeline")
    size.add_argument("--full", action="store_true", help="every model, long training (an hour or more on 2 cores)")
    p.add_argument("--only", choices=list(PIPELINES), action="append", help="run only this pipeline (repeatable)")
    p.add_argument("--compare", action="store_true", help="also run each pipeline under the other launchers")
    p.add_argument("--publish", action="store_true", help="keep what the docs quote: docs/results/, docs/img/")
    p.add_argument("--ett-args", default="", help="extra arguments for examples/ett_forecast.py")
    p.add_argument("--camels-args", default="", help="extra arguments for examples/camels_lstm.py")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per pipeline run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the pipelines, then print their tables, plots and logs."""
    args = parse_args(argv)
    names = args.only or list(PIPELINES)
    size_args = ["--quick"] if args.quick else ["--full"] if args.full else []
    extra = {"ett": shlex.split(args.ett_args), "camels": shlex.split(args.camels_args)}
    launchers = [args.launcher] + ([x for x in LAUNCHERS if x != args.launcher] if args.compare else [])
    t0 = time.perf_counter()
    load_at_start = os.getloadavg()  # kept with the figures: a busy machine shows in them
    runs = []
    for launcher in launchers:
        if launcher == "pipeline":
            runs.extend(run_in_one_pilot(names, args.ranks, size_args, extra, args.timeout))
            continue
        for name in names:
            out = RESULTS / name if launcher == args.launcher else RESULTS / f"{name}-{launcher}"
            runs.append(run_pipeline(name, launcher, args.ranks, size_args, extra[name], args.timeout, out))
    total = time.perf_counter() - t0
    summary = {
        "runs": runs,
        "total_wall_s": total,
        "size": size_args[0][2:] if size_args else "demo",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": sys.platform,
            "loadavg_at_start": load_at_start,
            "loadavg_at_end": os.getloadavg(),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "main_job.json").write_text(json.dumps(summary, indent=2) + "\n")

    print("\n" + "=" * 100)
    for run in runs:
        if run["launcher"] != args.launcher:
            continue
        table = Path(run["out"]) / "metrics.md"
        print(f"\n## {run['pipeline']} ({run['launcher']}, {run['ranks']} ranks, exit {run['exit_code']})\n")
        print(table.read_text() if table.exists() else "(no table: the run failed; see its logs)")
        plots = sorted((Path(run["out"]) / "plots").glob("*.png"))
        print("plots:  " + ("\n        ".join(str(p) for p in plots) or "(none)"))
        print(f"logs:   {run['logs']}")
        print(f"timing: {run['out']}/timings.json")
    print(
        "\nwall times (s): "
        + ", ".join(
            f"{r['pipeline']}/{r['launcher']} {r.get('wall_s', float('nan')):.1f}"
            + (f" (job {r['job_s']:.1f}, overhead {r['overhead_s']:.1f})" if "job_s" in r else "")
            for r in runs
        )
    )
    print(f"total {total:.1f} s; summary: {RESULTS / 'main_job.json'}")
    if args.publish:
        copied = publish(summary, args.launcher)
        print(f"published {len(copied)} files under {PUBLISHED.relative_to(REPO)}/ and docs/img/")
    return 0 if all(r["exit_code"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
