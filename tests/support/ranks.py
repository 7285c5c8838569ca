"""Run a test body on N ranks as real processes and collect every rank's result.

Two launchers:

* ``"env"``: N plain subprocesses wired like torchrun (RANK, WORLD_SIZE, LOCAL_RANK,
  LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT on a free port);
* ``"mpirun"``: ``mpirun -np N`` (Open MPI, oversubscribed, loopback only).

A rank that dies, raises or hangs fails the test within ``timeout`` seconds with every
failing rank's stderr; nothing is left running.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeprc_core import network

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback TCP port free now, and its successor (the TCP communicator's): the core's one probe."""
    return network.free_port("127.0.0.1")


@dataclass
class RankResult:
    """What one rank left behind."""

    rank: int
    returncode: int | None
    stdout: str
    stderr: str
    value: Any = None


class RanksFailed(AssertionError):
    """One or more ranks failed, timed out or left no result."""

    def __init__(self, message: str, results: list[RankResult]) -> None:
        super().__init__(message)
        self.results = results


def mpirun_available() -> bool:
    """True when Open MPI's mpirun is on PATH."""
    return shutil.which("mpirun") is not None


#: lets Open MPI's mpirun run as root (containers, CI)
MPIRUN_ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def mpirun_command(
    n: int, command: Sequence[str], export: Sequence[str] = (), options: Sequence[str] = ()
) -> list[str]:
    """``mpirun -np n`` of ``command`` on this host: oversubscribed, unbound, ``-x`` for each of ``export``."""
    exported = [arg for name in export for arg in ("-x", name)]
    return ["mpirun", "-np", str(n), "--oversubscribe", "--bind-to", "none", *exported, *options, *command]


#: Variables of a launcher that a test's own launch must not inherit from the environment pytest runs in.
LAUNCHER_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
    "RP_RANK",
    "RP_RANKS",
    "TF_CONFIG",
    "GLOO_SOCKET_IFNAME",
    "NCCL_SOCKET_IFNAME",
)


def launcher_free_env() -> dict[str, str]:
    """``os.environ`` without any launcher's rank variables (DEEPRC_*, OMPI_COMM_WORLD_*, SLURM_*, ...)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OMPI_COMM_WORLD", "PMI_", "PMIX_", "DEEPRC_", "SLURM_")) and k not in LAUNCHER_VARS
    }


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_ranks(
    file: str | os.PathLike[str],
    func: str,
    n: int,
    *,
    launcher: str = "env",
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    expect_failure: bool = False,
) -> list[RankResult]:
    """Run ``func`` from ``file`` on ``n`` ranks; return each rank's result in rank order.

    Raises :class:`RanksFailed` (an AssertionError) when any rank fails, unless
    ``expect_failure`` is set, in which case the results are returned for inspection and
    RanksFailed is raised only if *every* rank succeeded.
    """
    outdir = Path(tempfile.mkdtemp(prefix="deeprc-ranks-"))
    base = launcher_free_env()
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), base.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    base.setdefault("DEEPRC_COMM_TIMEOUT", str(max(5, int(timeout // 2))))
    base.update(env or {})
    cmd = [sys.executable, "-m", "tests.support.runner", str(file), func, str(outdir), *args]
    procs: list[subprocess.Popen[str]] = []
    logs: list[tuple[Path, Path]] = []
    try:
        if launcher == "env":
            port = free_port()
            for r in range(n):
                e = dict(base)
                e.update(
                    RANK=str(r),
                    WORLD_SIZE=str(n),
                    LOCAL_RANK=str(r),
                    LOCAL_WORLD_SIZE=str(n),
                    GROUP_RANK="0",
                    MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=str(port),
                )
                logs.append((outdir / f"stdout-{r}", outdir / f"stderr-{r}"))
                procs.append(_spawn(cmd, e, *logs[-1]))
        elif launcher == "mpirun":
            if not mpirun_available():
                raise RuntimeError("mpirun is not on PATH: apt-get install openmpi-bin libopenmpi-dev")
            e = dict(base)
            e.update(MPIRUN_ROOT_ENV, OMPI_MCA_rmaps_base_oversubscribe="1")
            e.setdefault("OMPI_MCA_btl", "self,vader,tcp")
            e.setdefault("OMPI_MCA_btl_tcp_if_include", "lo")
            e.setdefault("OMPI_MCA_oob_tcp_if_include", "lo")
            port = free_port()
            wrapped = mpirun_command(
                n,
                cmd,
                export=["PYTHONPATH", f"MASTER_PORT={port}", "MASTER_ADDR=127.0.0.1"],
                options=["--output-filename", str(outdir / "mpi")],
            )
            logs.append((outdir / "stdout-mpirun", outdir / "stderr-mpirun"))
            procs.append(_spawn(wrapped, e, *logs[-1]))
        else:
            raise ValueError(f"launcher must be 'env' or 'mpirun', not {launcher!r}")

        deadline = time.monotonic() + timeout
        timed_out = False
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                timed_out = True
                break
            # One dead env-rank means the job is lost: give the others a moment to fail on their own.
            if launcher == "env" and any(p.poll() not in (None, 0) for p in procs):
                grace = time.monotonic() + min(30.0, timeout / 2)
                while any(p.poll() is None for p in procs) and time.monotonic() < min(grace, deadline):
                    time.sleep(0.05)
                break
            time.sleep(0.05)
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        results = _collect(outdir, n, launcher, procs, logs)
        failed = [
            r for r in results if r.returncode != 0 or r.value is None and not (outdir / f"rank-{r.rank}.pkl").exists()
        ]
        if timed_out:
            raise RanksFailed(f"ranks did not finish within {timeout:g}s\n" + _report(results), results)
        if failed and not expect_failure:
            raise RanksFailed(f"{len(failed)} of {n} ranks failed\n" + _report(failed), results)
        if expect_failure and not failed:
            raise RanksFailed("expected a rank to fail, but all succeeded", results)
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(outdir, ignore_errors=True)


def _spawn(cmd: list[str], env: dict[str, str], out: Path, err: Path) -> subprocess.Popen[str]:
    """Start one process in its own session (so the whole group can be killed), logging to files."""
    with out.open("w") as stdout, err.open("w") as stderr:  # the child keeps its own copies
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=stdout, stderr=stderr, text=True, start_new_session=True)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _collect(outdir: Path, n: int, launcher: str, procs: list[Any], logs: list[tuple[Path, Path]]) -> list[RankResult]:
    results = []
    for r in range(n):
        if launcher == "env":
            rc = procs[r].returncode
            stdout, stderr = _read(logs[r][0]), _read(logs[r][1])
        else:
            rc = procs[0].returncode
            rank_dir = outdir / "mpi" / "1" / f"rank.{r}"
            stdout, stderr = _read(rank_dir / "stdout"), _read(rank_dir / "stderr")
            if not stderr and not stdout:
                stderr = _read(logs[0][1])
        pkl = outdir / f"rank-{r}.pkl"
        value = pickle.loads(pkl.read_bytes()) if pkl.exists() else None
        if launcher == "mpirun" and rc == 0 and not pkl.exists():
            rc = 1
        if launcher == "mpirun" and rc != 0 and pkl.exists() and "Traceback" not in stderr:
            rc_rank: int | None = 0
        else:
            rc_rank = rc
        results.append(RankResult(r, rc_rank, stdout, stderr, value))
    return results


def _report(results: list[RankResult]) -> str:
    parts = []
    for r in results:
        parts.append(f"--- rank {r.rank} (exit {r.returncode}) stderr tail:\n{_tail(r.stderr)}")
    return "\n".join(parts)
