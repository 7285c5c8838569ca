"""``deeprc-launch``: run a script as one multi-rank RADICAL-Pilot task, or manage the pilot service.

::

    deeprc-launch [options] script.py [script args...]
    deeprc-launch [options] -m module [args...]
    deeprc-launch [options] executable [args...]
    deeprc-launch up [resource options]     # start a pilot service that stays up
    deeprc-launch status                    # show it
    deeprc-launch down                      # close it

See docs/launch.md for the full reference.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from .console import EXIT_INTERRUPTED, EXIT_PILOT_FAILED, Reporter, report
from .descriptions import (
    PilotSpec,
    default_run_dir,
    pilot_description,
    pilot_for_job,
    preview_rank_envs,
    resolve_command,
    resolve_ranks,
    task_description,
)
from .jobspec import JobSpec, add_job_arguments, job_from_args, new_run_id
from .output import follow, prepare_run_dir
from .preflight import PreflightError, preflight
from .resources import LOCAL_RESOURCE, add_resource_options, install_resource_config
from .runfiles import write_job_env


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``deeprc-launch [options] target [args...]``."""
    p = argparse.ArgumentParser(
        prog="deeprc-launch",
        description="Run a Lightning, Keras, plain-torch, Cylon or MPI script as one multi-rank RADICAL-Pilot "
        "task, every rank wired for torch.distributed, tf.distribute and MPI. "
        "Also: 'deeprc-launch up|status|down' for a pilot service that stays up.",
    )
    # The job's own options are declared with its fields (jobspec.JobSpec); each lands in its group.
    add_job_arguments({"ranks": p.add_argument_group("ranks")})
    add_resource_options(p)
    w = p.add_argument_group("wiring")
    b = p.add_argument_group("behaviour")
    add_job_arguments({"wiring": w, "behaviour": b})
    b.add_argument(
        "--dry-run", action="store_true", help="print descriptions and every rank's environment; start nothing"
    )
    b.add_argument("--prefix", action="store_true", help="prefix rank 0's streamed lines with [rank 0]")
    b.add_argument("--no-service", action="store_true", help="start an own pilot even if a service is up")
    b.add_argument(
        "--keep-warm",
        type=float,
        default=10.0,
        metavar="MIN",
        help="on this machine, with no service up: start one and keep its pilot MIN minutes after the last task, "
        "so the next launch skips the pilot start (default 10; 0: an own pilot, closed at the end)",
    )
    b.add_argument("-m", dest="module", default=None, help="run a module (python -m MODULE)")
    p.add_argument("target", nargs="?", help="script.py, or an executable")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the script")
    return p


def split_argv(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """Split at the script: ``(launcher options, [target or -m module, script args...])``.

    Everything after the script belongs to the script, even when it looks like our options.
    """
    takes_value = {s for a in parser._actions if a.nargs != 0 for s in a.option_strings}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return argv[:i], argv[i + 1 :]
        if a == "-m" or not a.startswith("-"):
            return argv[:i], argv[i:]
        i += 2 if (a in takes_value and "=" not in a) else 1
    return argv, []


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the run form of the command line."""
    p = build_parser()
    opts, rest = split_argv(p, argv)
    ns = p.parse_args(opts)
    if rest and rest[0] == "-m":
        if len(rest) < 2:
            p.error("-m needs a module name")
        ns.module, ns.target, ns.args = rest[1], rest[1], rest[2:]
    elif rest:
        ns.target, ns.args = rest[0], rest[1:]
    if not ns.target:
        p.error("give a script, -m module or an executable to run")
    return ns


def specs_from_args(ns: argparse.Namespace) -> tuple[JobSpec, PilotSpec]:
    """The job and pilot a parsed command line asks for."""
    run_id = new_run_id("run")
    python = ns.python or sys.executable
    job = job_from_args(
        ns,
        command=resolve_command(ns.target, list(ns.args), module=bool(ns.module), python=python),
        ranks=resolve_ranks(ns.ranks, ns.nodes, ns.ranks_per_node),
        run_id=run_id,
        run_dir=os.path.abspath(ns.run_dir) if ns.run_dir else default_run_dir(run_id),
        python=python,
        name=os.path.basename(ns.target),
        cwd=os.path.abspath(ns.cwd) if ns.cwd else os.getcwd(),
    )
    pilot = PilotSpec(
        resource=ns.resource or LOCAL_RESOURCE,
        nodes=ns.nodes,
        cores=ns.cores,
        gpus=ns.gpus,
        queue=ns.queue,
        project=ns.project,
        walltime=ns.walltime,
        sandbox=ns.sandbox,
    )
    return job, pilot_for_job(pilot, job)


def dry_run(job: JobSpec, pilot: PilotSpec) -> int:
    """Print the pilot and task descriptions and each rank's environment; submit nothing."""
    out: dict[str, Any] = {
        "pilot_description": pilot_description(pilot),
        "task_description": task_description(job, pilot.resource),
        "rank_environments": preview_rank_envs(job, pilot),
        "logs": job.run_dir,
    }
    print(json.dumps(out, indent=2))
    return 0


def run_own_pilot(job: JobSpec, pilot: PilotSpec, ns: argparse.Namespace, rep: Reporter) -> int:
    """Start a pilot, run the job in it, close it."""
    from .session import PilotError, PilotSession

    sess = PilotSession(pilot, progress=rep, keep_sandbox=ns.keep_sandbox, verbose=ns.verbose > 0)
    task: Any = None
    seen: set[str] = set()

    def on_state(t: Any, state: str) -> None:
        if task is not None and t.uid == task.uid and state not in seen:
            seen.add(state)
            if state == "AGENT_EXECUTING":
                rep(f"task {t.uid} running on {job.ranks} rank(s)")
            elif state in ("DONE", "FAILED", "CANCELED"):
                rep(f"task {t.uid} {state.lower()}")
            else:
                rep.detail(f"task {t.uid} {state}")

    # Ctrl-C must reach us as KeyboardInterrupt, also while RP's threads hold the signal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        try:
            sess.start()
        except PilotError as exc:
            print(f"deeprc-launch: {exc}", file=sys.stderr)
            return EXIT_PILOT_FAILED
        sess.on_task_state(on_state)
        prepare_run_dir(job.run_dir)
        write_job_env(job.run_dir, job.run_id, job.env)
        task = sess.submit([task_description(job, pilot.resource)])[0]

        def get_state() -> tuple[str, int | None, str]:
            return str(task.state), task.exit_code, str(task.stderr or "")

        result = follow(job.run_dir, job.ranks, get_state, lambda: sess.cancel([task.uid]), prefix=ns.prefix)
        return report(result, rep)
    except KeyboardInterrupt:
        rep("interrupted: cancelling the task and closing the session")
        if task is not None:
            try:
                sess.cancel([task.uid])
                t_end = time.monotonic() + 15
                while str(task.state) not in ("DONE", "FAILED", "CANCELED") and time.monotonic() < t_end:
                    time.sleep(0.1)
            except Exception:  # noqa: BLE001 - closing the session below kills what is left
                pass
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the shutdown
        t0 = time.monotonic()
        sess.close()
        rep.detail(f"session closed in {time.monotonic() - t0:.1f}s")
        signal.signal(signal.SIGINT, signal.default_int_handler)


def start_warm_service(pilot: PilotSpec, ns: argparse.Namespace, rep: Reporter) -> int:
    """Start a local pilot service that closes itself after ``--keep-warm`` idle minutes (like a build daemon)."""
    from .service_commands import service_main

    rep(f"starting a pilot service that stays up {ns.keep_warm:g} min after the last task (--keep-warm 0: no)")
    args = ["up", "--idle-timeout", f"{ns.keep_warm * 60:g}", "--walltime", f"{ns.walltime:g}"]
    args += ["--cores", str(pilot.cores)] if pilot.cores else []
    args += ["--gpus", str(pilot.gpus)] if pilot.gpus is not None else []
    args += ["-q"] if ns.quiet else ["-v"] * ns.verbose
    return service_main(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``deeprc-launch`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("up", "status", "down"):
        from .service_commands import service_main

        return service_main(argv)
    ns = parse(argv)
    rep = Reporter(-1 if ns.quiet else ns.verbose)
    try:
        if ns.resource_config:
            ns.resource = install_resource_config(ns.resource_config, ns.resource)
            rep.detail(f"resource {ns.resource} from {ns.resource_config}")
        job, pilot = specs_from_args(ns)
    except ValueError as exc:
        print(f"deeprc-launch: {exc}", file=sys.stderr)
        return 2
    if ns.dry_run:
        return dry_run(job, pilot)
    try:
        preflight(job, pilot, module=bool(ns.module))
    except PreflightError as exc:  # before any pilot or service: the run-time exit code, in milliseconds
        print(f"deeprc-launch: {exc}", file=sys.stderr)
        return exc.code
    if not ns.no_service and ns.resource is None:
        from .service_client import ServiceClient

        client = ServiceClient.connect()
        if client is None and ns.keep_warm > 0:
            code = start_warm_service(pilot, ns, rep)
            if code:
                return code
            client = ServiceClient.connect()
        if client is not None:
            rep(f"submitting to the running pilot service ({client.socket_path})")
            return client.run(job, ns, rep)
    return run_own_pilot(job, pilot, ns, rep)


if __name__ == "__main__":
    sys.exit(main())
