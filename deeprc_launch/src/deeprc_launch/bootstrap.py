"""In-task bootstrap: ``python -m deeprc_launch.bootstrap [options] -- command...``.

RADICAL-Pilot starts this once per rank (through mpirun/mpiexec/srun/flux). It

1. reads the rank and world size (``RP_RANK``/``RP_RANKS``, else the MPI launcher's variables),
2. derives every rank's host from the rank/host file RP wrote into the task sandbox or the
   scheduler's variables (see :mod:`deeprc_launch.wiring_derivation`),
3. agrees ports through the run folder (shared between nodes on a cluster's shared file
   system): every rank picks a free port on its host and publishes ``rank-<r>.json``
   (host, port, its CUDA devices); rank 0's port is the torch MASTER_PORT, all of them make
   TF_CONFIG; every rank waits for all the others with a timeout,
   Rank 0 also creates the job's secret (``secret``, 0600, exclusively) there before it publishes,
   and every rank passes it to the command as DEEPRC_JOB_SECRET after checking the file's owner
   and mode (:mod:`deeprc_launch.runfiles`): the TCP communicator's ranks authenticate with it,
   and it never appears on a command line (nor do ``--env`` values: they come in ``--env-file``),
4. sets DEEPRC_* and the conventional variables, and runs the user's command in the caller's
   folder (``--chdir``; every rank checks it exists on its host, and if one lacks it every rank
   fails with a message naming that rank and host) with its
   stdout/stderr going to ``<run dir>/rank-<r>.out|.err``; it forwards signals to the command's
   process group, kills what is left of it at the end, and records ``rank-<r>.exit``. While the
   command runs it touches ``rank-<r>.alive`` every :data:`HEARTBEAT_S` seconds, so a client can
   tell a rank that vanished without an exit record (its node or the pilot agent died).

It imports no deep-learning framework and only the light parts of deeprc_core.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from deeprc_core.network import free_port

from .jobspec import TIMEOUT_EXIT, add_bootstrap_arguments
from .runfiles import private_dir, read_job_env, read_job_secret, write_job_secret

#: Exit code of a rank whose bootstrap failed before the user's command started.
BOOTSTRAP_FAILED = 97
#: Seconds between touches of ``rank-<r>.alive`` while the command runs.
HEARTBEAT_S = 2.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the bootstrap's options; everything after ``--`` is the user's command."""
    if "--" not in argv:
        raise SystemExit("usage: python -m deeprc_launch.bootstrap [options] -- command ...")
    split = argv.index("--")
    p = argparse.ArgumentParser(prog="deeprc_launch.bootstrap")
    add_bootstrap_arguments(p)  # the job's fields that travel here, declared with them (jobspec.JobSpec)
    p.add_argument("--comm-timeout", type=float, default=None)
    p.add_argument("--host", default=None, help="address every rank publishes (a local pilot uses 127.0.0.1)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--env-file", default=None, help="0600 JSON file with the job's --env values (not on argv)")
    ns = p.parse_args(argv[:split])
    ns.command = argv[split + 1 :]
    if not ns.command:
        raise SystemExit("deeprc_launch.bootstrap: no command after --")
    return ns


def rank_and_world(env: Mapping[str, str]) -> tuple[int, int]:
    """This rank and the world size: RP's variables first, then the launcher's, else 0 of 1."""
    from deeprc_core.launchers import RADICAL

    from .wiring_derivation import launcher_info

    rp = RADICAL.read(env) if RADICAL.detect(env) else None
    if rp is not None and rp.rank is not None and rp.size is not None:
        return rp.rank, rp.size
    info = launcher_info(env)
    if info.rank is not None and info.size is not None:
        return info.rank, info.size
    return 0, 1


def read_launch_files(env: Mapping[str, str]) -> dict[str, str]:
    """Texts of the rank/host/node files this rank can see (RP's task sandbox, $PBS_NODEFILE)."""
    files: dict[str, str] = {}
    sandbox, uid = env.get("RP_TASK_SANDBOX", ""), env.get("RP_TASK_ID", "")
    candidates = {"rankfile": f"{sandbox}/{uid}.rf", "hostfile": f"{sandbox}/{uid}.hf"} if sandbox and uid else {}
    if env.get("PBS_NODEFILE"):
        candidates["nodefile"] = env["PBS_NODEFILE"]
    for kind, path in candidates.items():
        with contextlib.suppress(OSError):
            files[kind] = Path(path).read_text()
    return files


def publish(rdv: Path, rank: int, record: dict[str, object]) -> None:
    """Write this rank's record atomically (rename), so readers never see half a file."""
    tmp = rdv / f".rank-{rank}.json.{os.getpid()}"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, rdv / f"rank-{rank}.json")


def folder_problem(folder: str | None) -> str | None:
    """Why the command cannot start in ``folder`` on this host (None when it can)."""
    if folder is None or os.path.isdir(folder):
        return None
    return (
        f"the working folder {folder} does not exist on host {socket.gethostname()}. Ranks start in the folder "
        "deeprc-launch was started from (as under torchrun); on a cluster that folder must be on a file system "
        "the compute nodes share, or pass --chdir DIR with a folder that exists there"
    )


def gather(rdv: Path, world: int, timeout: float) -> list[dict[str, object]]:
    """Every rank's record, waiting up to ``timeout`` seconds for the ones not yet published."""
    deadline = time.monotonic() + timeout
    records: list[dict[str, object] | None] = [None] * world
    delay = 0.005
    while True:
        for r in range(world):
            if records[r] is None:
                with contextlib.suppress(OSError, ValueError):
                    records[r] = json.loads((rdv / f"rank-{r}.json").read_text())
        missing = [r for r, rec in enumerate(records) if rec is None]
        if not missing:
            return [rec for rec in records if rec is not None]
        if time.monotonic() > deadline:
            raise TimeoutError(f"ranks {missing} did not publish their address in {rdv} within {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


def _child_setup() -> None:
    # Own process group (so signals reach the whole tree) and die with the bootstrap (no orphans).
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _launcher_pid() -> int | None:
    """The process that started our parent (mpirun, orted, srun's stepd, RP's launch script); None if unknown."""
    try:
        stat = Path(f"/proc/{os.getppid()}/stat").read_text()
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return ppid if ppid > 1 else None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def run(ns: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Derive the wiring, run the command, record its exit; returns the exit code."""
    from .rank_env import build_rank_env
    from .wiring_derivation import derive_hosts, launcher_info, node_visible_devices, resolve_layout

    rank, world = rank_and_world(environ)
    run_dir = Path(ns.run_dir)
    rdv = run_dir / "rendezvous" / (ns.run_id or "run")  # per launch: a reused folder never mixes runs
    umask = os.umask(0o077)  # logs, records and folders of the run: this user's alone (the command gets `umask`)
    private_dir(rdv)
    out = _private_log(run_dir / f"rank-{rank}.out")
    err = _private_log(run_dir / f"rank-{rank}.err")
    try:
        user_env = dict(kv.split("=", 1) for kv in ns.env if "=" in kv)
        if ns.env_file:
            user_env.update(read_job_env(Path(ns.env_file)))
        guess = derive_hosts(environ, world, read_launch_files(environ))
        host = ns.host or (guess[rank] if guess else socket.gethostname())
        port = free_port(ns.host or "")
        if rank == 0:
            write_job_secret(rdv)
        record = {"host": host, "port": port, "cuda": environ.get("CUDA_VISIBLE_DEVICES")}
        publish(rdv, rank, {**record, "folder_problem": folder_problem(ns.cwd)})
        records = gather(rdv, world, ns.rendezvous_timeout)
        # Every rank fails when one cannot start in the folder: none runs elsewhere, none waits on it.
        bad = [(r, rec["folder_problem"]) for r, rec in enumerate(records) if rec.get("folder_problem")]
        if bad:
            raise RuntimeError(f"rank {bad[0][0]} cannot start the command: {bad[0][1]}")
        job_secret = read_job_secret(rdv)
    except Exception as exc:  # noqa: BLE001 - reported in the rank's stderr, then the rank fails
        err.write(f"deeprc-launch bootstrap (rank {rank}): {exc}\n".encode())
        _write_exit(run_dir, rank, BOOTSTRAP_FAILED)
        return BOOTSTRAP_FAILED
    hosts = [str(r["host"]) for r in records]
    layout = resolve_layout(launcher_info(environ), hosts, rank)
    devices = None
    if "CUDA_VISIBLE_DEVICES" not in user_env:
        per_rank = [r.get("cuda") for r in records]
        devices = node_visible_devices(hosts, rank, ns.gpus_per_rank, [str(d) if d else None for d in per_rank])
    env = dict(environ)
    env.update(
        build_rank_env(
            rank=rank,
            hosts=hosts,
            layout=layout,
            master_port=int(records[0]["port"]),  # type: ignore[call-overload]
            worker_ports=[int(r["port"]) for r in records],  # type: ignore[call-overload]
            backend=ns.backend,
            framework=ns.framework,
            gpus_per_rank=ns.gpus_per_rank,
            visible_devices=devices,
            run_id=ns.run_id,
            log_dir=str(run_dir),
            comm_timeout=ns.comm_timeout,
            job_secret=job_secret,
        )
    )
    env.update(user_env)
    env.setdefault("PYTHONUNBUFFERED", "1")  # rank 0's output streams live to the terminal
    return _run_child(ns.command, env, out, err, run_dir, rank, cwd=ns.cwd, umask=umask, timeout=ns.timeout)


def _private_log(path: Path):  # noqa: ANN202 - a raw binary file
    """Open a rank's log for appending, created 0600 (it may hold secrets the script prints)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "ab", buffering=0)


def _write_exit(run_dir: Path, rank: int, code: int) -> None:
    with contextlib.suppress(OSError):
        (run_dir / f"rank-{rank}.exit").write_text(
            json.dumps({"rank": rank, "code": code, "time": time.time(), "host": socket.gethostname()})
        )


def _run_child(  # noqa: PLR0913
    command: list[str],
    env: dict[str, str],
    out,  # noqa: ANN001
    err,  # noqa: ANN001
    run_dir: Path,
    rank: int,
    cwd: str | None = None,
    umask: int = 0o022,
    timeout: float | None = None,
) -> int:
    def setup() -> None:
        os.umask(umask)  # the command creates its files as it would under torchrun
        _child_setup()

    try:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=err, cwd=cwd, preexec_fn=setup)  # noqa: PLW1509
    except OSError as exc:
        err.write(f"deeprc-launch bootstrap (rank {rank}): cannot start {command[0]!r}: {exc}\n".encode())
        _write_exit(run_dir, rank, 127)
        return 127
    pgid = child.pid

    def forward(signum: int, _frame: object) -> None:
        _kill_group(pgid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    launcher = _launcher_pid()
    alive = run_dir / f"rank-{rank}.alive"
    beat = 0.0
    # --timeout is kept here, not in RP's task description: RP's own timeout watcher polls
    # without sleeping while any task has one, which costs the pilot a whole CPU.
    deadline = time.monotonic() + timeout if timeout else None
    timed_out = False
    while True:
        if time.monotonic() - beat >= HEARTBEAT_S:
            with contextlib.suppress(OSError):
                alive.touch()
            beat = time.monotonic()
        try:
            code = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            # RP cancels a task by killing its launch process group; mpirun (or orted, srun) can die
            # before it forwards the signal, leaving this rank orphaned: then end the command ourselves.
            if launcher is not None and not _alive(launcher):
                err.write(f"deeprc-launch bootstrap (rank {rank}): launcher {launcher} is gone; stopping\n".encode())
                code = _stop(child, pgid)
                break
            if deadline is not None and time.monotonic() > deadline:
                err.write(
                    f"deeprc-launch bootstrap (rank {rank}): the task ran past --timeout {timeout:g} s; "
                    f"stopping it (exit {TIMEOUT_EXIT})\n".encode()
                )
                _stop(child, pgid)
                timed_out = True
                break
        except InterruptedError:
            continue
    # Whatever the command left in its group (data loader workers, spawned helpers) goes too.
    if _group_alive(pgid):
        _kill_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _kill_group(pgid, signal.SIGKILL)
    code = TIMEOUT_EXIT if timed_out else 128 - code if code < 0 else code
    _write_exit(run_dir, rank, code)
    return code


def _stop(child: subprocess.Popen[bytes], pgid: int) -> int:
    """End the command's process group: SIGTERM, then SIGKILL after 3 s; its exit status."""
    _kill_group(pgid, signal.SIGTERM)
    try:
        return child.wait(timeout=3.0)
    except subprocess.TimeoutExpired:
        _kill_group(pgid, signal.SIGKILL)
        return child.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m deeprc_launch.bootstrap``."""
    ns = parse_args(sys.argv[1:] if argv is None else argv)
    return run(ns, os.environ)


if __name__ == "__main__":
    sys.exit(main())
