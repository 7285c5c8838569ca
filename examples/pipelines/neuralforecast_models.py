"""The paper's eleven NeuralForecast models on ETTh1, eleven tasks in one pilot (Tables 3 and 4).

``python -m examples.pipelines.neuralforecast_models [--quick | --paper] [--compare] [--publish]``
starts one local RADICAL-Pilot pilot with deeprc-launch's pipeline API
(:class:`deeprc_launch.Launcher`) and submits one task per model
(:mod:`examples.pipelines.nf_task`: Deep RC prepares ETTh1 as a global table, NeuralForecast
trains and predicts), all at once, plus the DDP check: ``--ddp-model`` (NLinear) on 2 ranks,
each rank training on its own series. ``--compare`` then runs the same eleven one after
another in the same pilot and reports both wall times. It ends with the Table 3 layout: MAE,
MSE and MAPE per model beside the paper's figures and the hand-written models' (the demo's
``docs/results/demo/ett/metrics.json``).

Sizes (see ``nf_models``): ``--quick`` a few steps per model, every 96th test window (the
test runs it; minutes on 2 cores); the default demo size; ``--paper`` the most the 2-core
budget allows in an hour for all eleven. Outputs go to ``results/neuralforecast/`` (per model
``<Model>.json``, ``metrics.{md,csv,json}``, ``pilot.json``) and each task's logs to the
folder it prints. ``--publish`` copies them to ``docs/results/neuralforecast-<size>/`` and
renders the table into docs/results.md and the README (between the ``neuralforecast-table``
markers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from examples.pipelines import nf_models
from examples.pipelines.report import markdown_table, write_table

REPO = Path(__file__).resolve().parents[2]
TASK = REPO / "examples" / "pipelines" / "nf_task.py"
PUBLISHED = REPO / "docs" / "results"
#: The hand-written models' demo run (pipeline A), for the side-by-side column.
HAND_WRITTEN = PUBLISHED / "demo" / "ett" / "metrics.json"
MARK_BEGIN = "<!-- neuralforecast-table:begin (rendered by examples/pipelines/neuralforecast_models.py) -->"
MARK_END = "<!-- neuralforecast-table:end -->"

COLUMNS = [
    ("model", "model"),
    ("mae", "MAE"),
    ("mse", "MSE"),
    ("mape", "MAPE %"),
    ("paper_mae", "paper MAE"),
    ("paper_mse", "paper MSE"),
    ("gap", "MAE / paper"),
    ("hand_mae", "hand-written MAE"),
    ("ot_mae", "OT MAE"),
    ("steps", "steps"),
    ("train_s", "train s"),
    ("params", "params"),
]


def _progress(t0: float) -> Any:
    return lambda m: print(f"[deeprc-launch {time.perf_counter() - t0:6.1f}s] {m}", flush=True)


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far on this machine: by all (``busy``) and by RADICAL-Pilot's own processes (``pilot``).

    The pilot's processes are those named ``rp.*`` (its agent, managers and queues, of any
    session on this machine); Linux ``/proc`` only (elsewhere both are NaN).
    """
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return {"busy": float("nan"), "pilot": float("nan")}
    busy = sum(int(v) for v in fields[:8]) - int(fields[3]) - int(fields[4])  # all but idle and iowait
    pilot = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        if text[text.index("(") + 1 : text.rindex(")")].startswith("rp."):
            after = text[text.rindex(")") + 2 :].split()
            pilot += int(after[11]) + int(after[12])  # utime, stime: proc(5) fields 14 and 15
    return {"busy": busy / tick, "pilot": pilot / tick}


def _phase(start: float, cpu0: dict[str, float], tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase's record: its tasks, wall time, and the machine's and the pilot's CPU seconds in it."""
    cpu = _cpu_seconds()
    return {
        "tasks": tasks,
        "wall_s": time.perf_counter() - start,
        "machine_cpu_s": cpu["busy"] - cpu0["busy"],
        "pilot_cpu_s": cpu["pilot"] - cpu0["pilot"],
    }


def _wait_all(handles: list[tuple[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """Wait for every task; one line per task as it ends."""
    infos = []
    for name, handle in handles:
        try:
            result = handle.wait(timeout)
        except TimeoutError:
            infos.append({"task": name, "exit_code": None, "state": "TIMEOUT", "logs": handle.run_dir})
            print(f"[neuralforecast] {name}: no end within {timeout:.0f} s; logs {handle.run_dir}", flush=True)
            continue
        infos.append({"task": name, "exit_code": result.exit_code, "state": result.state, "logs": handle.run_dir})
        print(f"[neuralforecast] {name}: exit {result.exit_code}, logs {handle.run_dir}", flush=True)
        if not result.ok:
            print(result.summary(), file=sys.stderr, flush=True)
    return infos


def run_pilot(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """All models at once in one pilot (plus the DDP task), then, with ``--compare``, one after another."""
    from deeprc_launch import Launcher

    models = args.models
    ddp = [args.ddp_model] if args.ddp_model else []
    cores = len(models) + 2 * len(ddp)  # one pilot core per rank: every task starts at once
    env = {"PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"size": args.size, "models": models, "ddp_model": args.ddp_model}
    with Launcher(cores=cores, progress=_progress(t0)) as launcher:
        summary["pilot_startup_s"] = launcher.pilot_startup_s

        def submit(model: str, ranks: int, folder: Path, after: list[Any]) -> Any:
            argv = ["--model", model, "--size", args.size, "--out", str(folder)]
            return launcher.submit(
                str(TASK), argv, ranks=ranks, after=after, name=f"nf-{model}-{ranks}", env=env, timeout=args.timeout
            )

        start, cpu0 = time.perf_counter(), _cpu_seconds()
        handles = [(m, submit(m, 1, out, [])) for m in models]
        handles += [(f"{m} (2 ranks)", submit(m, 2, out, [])) for m in ddp]
        print(f"[neuralforecast] submitted {len(handles)} tasks at once to one pilot ({cores} cores)", flush=True)
        summary["concurrent"] = _phase(start, cpu0, _wait_all(handles, args.timeout))
        print(f"[neuralforecast] concurrent: {_phase_line(summary['concurrent'])}", flush=True)
        if args.compare:
            start, cpu0 = time.perf_counter(), _cpu_seconds()
            chain: list[Any] = []
            seq = []
            for m in models:
                h = submit(m, 1, out / "sequential", chain[-1:])
                chain.append(h)
                seq.append((m, h))
            summary["sequential"] = _phase(start, cpu0, _wait_all(seq, args.timeout))
            ratio = summary["sequential"]["wall_s"] / summary["concurrent"]["wall_s"]
            summary["sequential_over_concurrent"] = ratio
            print(
                f"[neuralforecast] one after another: {_phase_line(summary['sequential'])} ({ratio:.2f}x)", flush=True
            )
    summary["session_s"] = time.perf_counter() - t0
    summary["machine"] = {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()}
    return summary


def _phase_line(phase: dict[str, Any]) -> str:
    return (
        f"{phase['wall_s']:.1f} s; the machine busy {phase['machine_cpu_s']:.0f} CPU-s, "
        f"of them the pilot's own processes {phase['pilot_cpu_s']:.0f}"
    )


def run_direct(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The same tasks as plain processes, ``--parallel`` at a time in the order given (no pilot).

    For a machine so busy that a ``nice``'d pilot cannot start within its 15-minute limit; the
    DDP task runs under ``torch.distributed.run``.
    """
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    py = sys.executable
    torchrun = [py, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517", str(TASK)]
    jobs = []
    for m in args.models:  # the DDP run right after the same model's 1-rank run
        jobs.append((m, [py, str(TASK)]))
        if m == args.ddp_model:
            jobs.append((m, torchrun))
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    running: list[tuple[str, Any, Any]] = []
    infos = []
    pending = list(jobs)
    while pending or running:
        while pending and len(running) < args.parallel:
            model, cmd = pending.pop(0)
            name = f"{model}-{'2' if 'torch.distributed.run' in cmd else '1'}"
            log = (logs / f"{name}.log").open("w")
            argv = [*cmd, "--model", model, "--size", args.size, "--out", str(out)]
            running.append((name, subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
            print(f"[neuralforecast] started {name}; log {logs / (name + '.log')}", flush=True)
        time.sleep(2)
        for item in [r for r in running if r[1].poll() is not None]:
            name, proc, log = item
            log.close()
            running.remove(item)
            infos.append({"task": name, "exit_code": proc.returncode, "logs": str(logs / f"{name}.log")})
            print(
                f"[neuralforecast] {name}: exit {proc.returncode} after {time.perf_counter() - start:.0f} s", flush=True
            )
    wall = time.perf_counter() - start
    return {
        "size": args.size,
        "models": args.models,
        "ddp_model": args.ddp_model,
        "launcher": "direct",
        "parallel": args.parallel,
        "concurrent": {"tasks": infos, "wall_s": wall},
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
    }


def _hand_written() -> dict[str, float]:
    if not HAND_WRITTEN.exists():
        return {}
    rows = json.loads(HAND_WRITTEN.read_text())
    return {r["model"]: r["mae"] for r in rows}


def naive_row(stride: int) -> dict[str, Any]:
    """The last-value baseline on the same test windows (computed here, on one rank: no model to train)."""
    from examples.pipelines import nf_data
    from examples.pipelines.ett_data import EttConfig
    from examples.pipelines.nf_task import naive_scores

    data = nf_data.prepare(EttConfig("ETTh1", 96, 96, "M"))
    return {"model": "naive (last value)", **naive_scores(data, 96, stride)}


def table_rows(out: Path, models: list[str], ddp_model: str | None, size: str) -> list[dict[str, Any]]:
    """Table 3's rows from the tasks' JSON files (a model whose task failed shows dashes)."""
    hand = _hand_written()
    rows = [naive_row(nf_models.plan(models[0], size).test_stride)] if models else []
    names = [(m, m) for m in models] + ([(ddp_model, f"{ddp_model}-2ranks")] if ddp_model else [])
    for model, stem in names:
        path = out / f"{stem}.json"
        got = json.loads(path.read_text()) if path.exists() else {}
        paper = nf_models.PAPER_TABLE3.get(model, (None, None))
        row = {**got, "model": model if stem == model else f"{model}, DDP 2 ranks"}
        row["paper_mae"], row["paper_mse"] = paper
        if paper[0] is not None and "mae" in got:
            row["gap"] = got["mae"] / paper[0]
        row["hand_mae"] = hand.get(model)  # the demo names its models as NeuralForecast does
        rows.append(row)
    return rows


def preamble(summary: dict[str, Any]) -> str:
    """What the table is, and the two wall times."""
    text = (
        f"### ETTh1, input 96 -> horizon 96, all 7 series; NeuralForecast 3.3.0 models fed by Deep RC; size {summary['size']}\n\n"
        "MAE/MSE on the normalised scale (training-months mean/std) over every scored test window and step of "
        "all 7 series; MAPE in original units (undefined points at 0 left out). Paper: Table 3 as quoted in "
        "issue #8 (five models; the others are not quoted in what the project holds). Hand-written: pipeline A's "
        "own models, demo size. "
    )
    conc = summary.get("concurrent", {}).get("wall_s")
    if summary.get("partial"):
        text += (
            "Partial: the table was built from a run stopped before every model finished (`--table-only`); "
            "a model with dashes had not finished. "
        )
    if conc is not None and summary.get("launcher") == "direct":
        text += (
            f"Run as plain processes, {summary['parallel']} at a time (no pilot: the machine was too busy for a "
            f"nice'd pilot to start): {conc:.0f} s."
        )
    elif conc is not None:
        cpus = summary.get("machine", {}).get("cpus") or 1
        tasks = len(summary["concurrent"].get("tasks", []))
        what = "the models and the DDP run" if summary.get("ddp_model") else "the models"
        text += f"{tasks} tasks ({what}) at once in one pilot: {conc:.0f} s{_cpu_note(summary['concurrent'], cpus)}"
        seq = summary.get("sequential", {}).get("wall_s")
        if seq is not None:
            text += (
                f"; the {len(summary['sequential'].get('tasks', []))} models one after another in the same pilot: "
                f"{seq:.0f} s{_cpu_note(summary['sequential'], cpus)}, "
                f"{summary['sequential_over_concurrent']:.2f}x the concurrent wall time"
            )
        text += "."
    if summary.get("note"):  # what a person recorded about how the run went (e.g. models run again)
        text += " " + summary["note"]
    return text


def _cpu_note(phase: dict[str, Any], cpus: int) -> str:
    """How busy a phase kept the machine, and what the pilot itself used (runs before these were kept: nothing)."""
    if "machine_cpu_s" not in phase:
        return ""
    share = phase["machine_cpu_s"] / (phase["wall_s"] * cpus)
    return (
        f" (the {cpus} CPUs {share:.0%} busy; RADICAL-Pilot's own processes used "
        f"{phase['pilot_cpu_s']:.0f} CPU-s, {phase['pilot_cpu_s'] / phase['wall_s']:.2f} of a CPU)"
    )


def render_docs(md_table: str, files: list[Path]) -> list[Path]:
    """Put ``md_table`` between the neuralforecast-table markers of each file that has them."""
    done = []
    for path in files:
        text = path.read_text()
        if MARK_BEGIN not in text or MARK_END not in text:
            continue
        head, rest = text.split(MARK_BEGIN, 1)
        _, tail = rest.split(MARK_END, 1)
        path.write_text(head + MARK_BEGIN + "\n" + md_table.rstrip() + "\n" + MARK_END + tail)
        done.append(path)
    return done


def publish(out: Path, size: str) -> Path:
    """Copy the run's tables and per-model results to ``docs/results/neuralforecast-<size>/``."""
    dest = PUBLISHED / f"neuralforecast-{size}"
    if dest.exists():
        shutil.rmtree(dest)  # one publication is one run
    dest.mkdir(parents=True)
    for path in sorted(out.glob("*.json")) + sorted(out.glob("metrics.*")):
        shutil.copy2(path, dest / path.name)
    seq = out / "sequential"
    if seq.is_dir():
        (dest / "sequential").mkdir()
        for path in sorted(seq.glob("*.json")):
            shutil.copy2(path, dest / "sequential" / path.name)
    return dest


def docs_table(rows: list[dict[str, Any]], summary: dict[str, Any], source: str) -> str:
    """The compact table the README and docs/results.md show."""
    cols = [c for c in COLUMNS if c[0] not in ("ot_mae", "params")]
    note = f"Measured at `{summary['size']}` size ([`{source}`]({source})). " + preamble(summary).split("\n\n", 1)[1]
    return markdown_table(rows, cols) + "\n\n" + note + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the eleven-model pipeline."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few steps per model (minutes; the tests run it)")
    size.add_argument("--paper", action="store_true", help="the paper's settings as far as 2 cores allow in an hour")
    p.add_argument("--models", default=",".join(nf_models.PAPER_MODELS), help="comma-separated subset of the eleven")
    p.add_argument("--ddp-model", default="NLinear", help="also train this model on 2 ranks ('' to skip)")
    p.add_argument("--compare", action="store_true", help="then run the models one after another in the same pilot")
    p.add_argument("--publish", action="store_true", help="keep the results under docs/results/ and render the docs")
    p.add_argument("--out", default=None, help="output folder (default results/neuralforecast)")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per task (default: 30 min at --quick, 2 h at the demo size, 4 h at --paper: "
        "'an hour' is the quiet-machine budget, not a limit to kill a model at)",
    )
    p.add_argument(
        "--direct",
        action="store_true",
        help="no pilot: run the tasks as plain processes (a machine too busy for a nice'd pilot to start)",
    )
    p.add_argument("--parallel", type=int, default=99, help="with --direct: tasks at a time, in --models order")
    p.add_argument(
        "--table-only",
        action="store_true",
        help="run nothing: build the table from the output folder's results (e.g. a run stopped early)",
    )
    args = p.parse_args(argv)
    args.size = "quick" if args.quick else "paper" if args.paper else "demo"
    if args.timeout is None:
        args.timeout = {"quick": 1800.0, "demo": 7200.0, "paper": 4 * 3600.0}[args.size]
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models + ([args.ddp_model] if args.ddp_model else []):
        nf_models.plan(m, args.size)  # a bad name fails here, before a pilot starts
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the tasks, then write and print the table."""
    args = parse_args(argv)
    out = Path(args.out) if args.out else REPO / "results" / "neuralforecast"
    if args.table_only:
        pilot = out / "pilot.json"
        summary = json.loads(pilot.read_text()) if pilot.exists() else {"size": args.size, "partial": True}
    else:
        if out.exists():
            shutil.rmtree(out)  # results of an earlier run must not fill this run's table
        out.mkdir(parents=True)
        summary = run_direct(args, out) if args.direct else run_pilot(args, out)
    rows = table_rows(out, args.models, args.ddp_model or None, args.size)
    summary["rows"] = rows
    (out / "pilot.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    paths = write_table(out, "metrics", rows, COLUMNS, preamble(summary))
    print("\n" + paths["md"].read_text(), flush=True)
    print(f"tables: {paths['md']} (.csv, .json); per model: {out}/<Model>.json; pilot: {out / 'pilot.json'}")
    if args.publish:
        dest = publish(out, args.size)
        source = os.path.relpath(dest / "metrics.json", REPO / "docs")
        rendered: list[Path] = []
        if args.size == "paper":  # the docs quote the paper-size run; other sizes are only kept
            rendered = render_docs(docs_table(rows, summary, source), [REPO / "docs" / "results.md"])
            readme_source = os.path.relpath(dest / "metrics.json", REPO)
            rendered += render_docs(docs_table(rows, summary, readme_source), [REPO / "README.md"])
        print(
            f"published under {dest.relative_to(REPO)}; rendered into {', '.join(str(p.relative_to(REPO)) for p in rendered) or 'nothing (no markers)'}"
        )
    failed = [
        t
        for phase in ("concurrent", "sequential")
        for t in summary.get(phase, {}).get("tasks", [])
        if t["exit_code"] != 0
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
