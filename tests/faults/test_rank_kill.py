"""(c) SIGKILL of one rank mid-epoch under torchrun, mpirun and deeprc-launch: every rank gone, the rank named.

Two ranks train DDP (gloo) over a Deep RC loader; rank 1 kills itself with SIGKILL in the middle
of its first epoch. The figure is the time from the kill until no rank of the job runs any more; the
bound asserted is :data:`BOUND_S` (the launchers' own monitoring; a collective with a dead peer
fails on the closed socket, at the latest after DEEPRC_COMM_TIMEOUT, 300 s by default).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.ranks import MPIRUN_ROOT_ENV, REPO, free_port, mpirun_available, mpirun_command

SCRIPT = Path(__file__).with_name("scripts") / "kill_mid_epoch.py"
#: Seconds within which every rank must be gone after one was killed.
BOUND_S = 30.0


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM_WORLD", "PMI_", "DEEPRC_RANK"))}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def _watch(proc: subprocess.Popen[str], out: Path, timeout: float) -> tuple[float, float, str]:
    """Wait for the kill, then until every rank's pid is gone; (seconds to all gone, to launcher exit, output)."""
    deadline = time.monotonic() + timeout
    while not (out / "killed").exists():
        assert proc.poll() is None or (out / "killed").exists(), proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "rank 1 never reached its kill point"
        time.sleep(0.05)
    killed = float((out / "killed").read_text())
    pids = [int((out / f"pid-{r}").read_text()) for r in (0, 1)]
    gone_at = None
    while time.monotonic() < deadline:
        if gone_at is None and not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids):
            gone_at = time.time()
        if gone_at is not None and proc.poll() is not None:
            break
        time.sleep(0.02)
    exited_at = time.time()
    try:
        output = proc.communicate(timeout=5)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        output = proc.communicate()[0]
    assert gone_at is not None, f"ranks still running {timeout:g}s after the kill"
    return gone_at - killed, exited_at - killed, output


def _run(cmd: list[str], env: dict[str, str], out: Path) -> tuple[float, float, int, str]:
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        gone, exited, output = _watch(proc, out, 240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    return gone, exited, proc.returncode, output


def _check(
    name: str, launcher: str, cmd: list[str], env: dict[str, str], out: Path, names: tuple[str, ...], record: Any
) -> None:
    """Run, assert every rank is gone within the bound and the output names rank 1, record the figures."""
    gone, exited, code, output = _run(cmd, env, out)
    assert code != 0
    assert all(n in output for n in names[:1]) and any(n in output for n in names[1:] or names), output[-3000:]
    assert gone < BOUND_S, gone
    record(
        f"c_sigkill_{name}",
        fault=f"SIGKILL of rank 1 of 2 mid-epoch (DDP, gloo) under {launcher}",
        detection_s=round(gone, 3),
        launcher_exit_s=round(exited, 3),
        bound_s=BOUND_S,
        names_rank=f"{launcher}: {' ... '.join(repr(n) for n in names[:2])}",
        lost="nothing (no input written)",
    )


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.torch
def test_sigkill_under_torchrun(tmp_path: Path, record: Any) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--nproc-per-node", "2", "--master-port", str(free_port()), str(SCRIPT), str(tmp_path)]
    _check("torchrun", "torchrun", cmd, _env(), tmp_path, ("local_rank: 1", "Signal 9", "exitcode  : -9"), record)


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.skipif(not mpirun_available(), reason="mpirun is not on PATH")
def test_sigkill_under_mpirun(tmp_path: Path, record: Any) -> None:
    env = _env(**MPIRUN_ROOT_ENV, OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo")
    cmd = mpirun_command(2, [sys.executable, str(SCRIPT), str(tmp_path)], export=["PYTHONPATH"])
    _check("mpirun", "mpirun", cmd, env, tmp_path, ("rank 1", "signal 9", "Killed"), record)


@pytest.mark.launcher
@pytest.mark.slow
@pytest.mark.torch
def test_sigkill_under_deeprc_launch(pilot_service: Path, tmp_path: Path, record: Any) -> None:
    cmd = [sys.executable, "-m", "deeprc_launch", "--ranks", "2", "--log-dir", str(tmp_path / "logs"), str(SCRIPT)]
    _check(
        "deeprc_launch",
        "deeprc-launch (pilot service)",
        [*cmd, str(tmp_path)],
        {**os.environ},
        tmp_path,
        ("rank 1 (on ", ") failed first"),  # the summary names the rank and its node
        record,
    )
