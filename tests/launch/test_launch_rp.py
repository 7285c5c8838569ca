"""End-to-end tests on a real local pilot: CLI (through one pilot service), own-pilot failure, pipeline API.

Pilot start-ups: one service (session fixture), one own-pilot CLI run, one Launcher.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from .conftest import CLI, REPO, SCRIPTS, run_cli

pytestmark = [pytest.mark.launcher, pytest.mark.slow]


def leftovers(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker``."""
    me = psutil.Process()
    mine = {me.pid, *(a.pid for a in me.parents())}  # pytest itself may mention the marker
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if marker in cmd and p.pid not in mine:
            found.append(cmd)
    return found


def test_cli_wiring_matches_detect_wiring(pilot_service: Path, tmp_path: Path) -> None:
    proc = run_cli(["--ranks", "2", "--log-dir", str(tmp_path), str(SCRIPTS / "print_wiring.py")])
    assert proc.returncode == 0, proc.stderr
    assert "submitting to the running pilot service" in proc.stderr
    outs = [json.loads((tmp_path / f"rank-{r}.out").read_text()) for r in range(2)]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == outs[0]  # rank 0 streamed live
    for r, o in enumerate(outs):
        assert (o["rank"], o["world"], o["local_rank"], o["local_world"], o["node_rank"]) == (r, 2, r, 2, 0)
        assert o["source"] == "deeprc" and o["master_addr"] == "127.0.0.1"
        assert o["master_port"] == outs[0]["master_port"] and o["env"]["MASTER_PORT"] == str(o["master_port"])


def _seen(outs: list[str]) -> list[dict[str, str]]:
    """What each rank of read_relative.py saw, by rank (its RANK is dropped: both launchers set it)."""
    recs = sorted((json.loads(line) for out in outs for line in out.splitlines() if line.startswith("{")), key=str)
    return [{k: v for k, v in r.items() if k != "rank"} for r in sorted(recs, key=lambda r: r["rank"])]


def test_relative_paths_as_under_torchrun(pilot_service: Path, tmp_path: Path) -> None:
    """Ranks start in the caller's folder (a relative data path works) with sys.path as under torchrun."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.txt").write_text("rows from the caller's folder\n")
    script = str(SCRIPTS / "read_relative.py")
    torchrun = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
    )
    assert torchrun.returncode == 0, torchrun.stderr[-3000:]
    expected = _seen([torchrun.stdout])
    assert len(expected) == 2 and expected[0]["cwd"] == str(work) and expected[0]["data"].startswith("rows")
    logs = tmp_path / "logs"
    proc = run_cli(["--ranks", "2", "--log-dir", str(logs), script], cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _seen([(logs / f"rank-{r}.out").read_text() for r in range(2)]) == expected
    # --chdir: started elsewhere (the repo), the ranks still start in work/.
    logs2 = tmp_path / "logs2"
    proc = run_cli(["--ranks", "2", "--chdir", str(work), "--log-dir", str(logs2), script], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _seen([(logs2 / f"rank-{r}.out").read_text() for r in range(2)]) == expected


def test_cli_lightning_ddp(pilot_service: Path) -> None:
    proc = run_cli(["--ranks", "2", str(SCRIPTS / "ddp_script.py")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DDP_OK world=2 backend=gloo" in proc.stdout


def test_cli_keras_mwms(pilot_service: Path) -> None:
    proc = run_cli(["--ranks", "2", "--framework", "tf", str(SCRIPTS / "keras_mwms.py")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MWMS_OK workers=2 sum=2" in proc.stdout


def test_cli_mpi4py_allreduce(pilot_service: Path) -> None:
    proc = run_cli(["--ranks", "2", "--backend", "mpi", str(REPO / "examples" / "mpi_allreduce.py")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MPI_OK size=2 sum=3" in proc.stdout


def test_cli_backend_reaches_torch_distributed(pilot_service: Path, tmp_path: Path) -> None:
    """--backend gloo is what init_process_group uses; --backend nccl on a CPU host fails every rank at once."""
    proc = run_cli(["--ranks", "2", "--backend", "gloo", "--log-dir", str(tmp_path), str(SCRIPTS / "torch_backend.py")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in range(2):
        assert f"BACKEND rank={r} gloo sum=2" in (tmp_path / f"rank-{r}.out").read_text()
    if torch_sees_a_gpu():
        return
    t0 = time.monotonic()
    nccl = tmp_path / "nccl"
    proc = run_cli(["--ranks", "2", "--backend", "nccl", "--log-dir", str(nccl), str(SCRIPTS / "torch_backend.py")])
    assert proc.returncode == 1, proc.stderr[-3000:]  # the ranks' own exit code (an uncaught RuntimeError)
    for r in range(2):  # each rank refuses by itself, before any rendezvous
        err = (nccl / f"rank-{r}.err").read_text()
        assert "DEEPRC_BACKEND=nccl (deeprc-launch --backend nccl) but this rank sees no CUDA GPU" in err, err[-2000:]
    assert time.monotonic() - t0 < 120  # no rank waits for a peer's timeout


def torch_sees_a_gpu() -> bool:
    """Whether torch on this host has a CUDA GPU (then nccl is a valid choice, not a failure)."""
    import torch

    return bool(torch.cuda.is_available())


def test_cli_failing_rank_through_service(pilot_service: Path, tmp_path: Path) -> None:
    proc = run_cli(
        ["--ranks", "2", "--env", "FAIL_RANK=1", "--log-dir", str(tmp_path), str(SCRIPTS / "print_wiring.py")]
    )
    assert proc.returncode == 3, proc.stderr
    assert re.search(r"rank 1 \(on [^)]+\) failed first", proc.stderr) and "rank 1 fails on purpose" in proc.stderr
    time.sleep(1)
    assert not leftovers(str(tmp_path)), leftovers(str(tmp_path))
    status = run_cli(["status"])
    assert status.returncode == 0 and "PMGR_ACTIVE" in status.stdout  # the service survives a failing task


def _interrupt_when_started(args: list[str], log_dir: Path, timeout: float = 300) -> tuple[int, str]:
    """Start deeprc-launch, send Ctrl-C (SIGINT) once both ranks run, return (exit code, stderr)."""
    proc = subprocess.Popen([*CLI, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if all((log_dir / f"rank-{r}.out").exists() and (log_dir / f"rank-{r}.out").read_text() for r in range(2)):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_cli_ctrl_c_through_service(pilot_service: Path, tmp_path: Path) -> None:
    code, err = _interrupt_when_started(
        ["--ranks", "2", "--log-dir", str(tmp_path), str(SCRIPTS / "sleeper.py")], tmp_path
    )
    assert code == 130, err
    deadline = time.monotonic() + 30
    while leftovers(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not leftovers(str(tmp_path))
    assert "PMGR_ACTIVE" in run_cli(["status"]).stdout  # the service survives a client's Ctrl-C


def test_cli_own_pilot_failing_rank(deeprc_home: Path, tmp_path: Path) -> None:
    """A pilot of its own (no service): failing rank -> its exit code, summary, nothing left behind."""
    proc = run_cli(
        [
            "--no-service",
            "--ranks",
            "2",
            "--env",
            "FAIL_RANK=0",
            "--log-dir",
            str(tmp_path),
            str(SCRIPTS / "print_wiring.py"),
        ],
        timeout=600,
    )
    assert proc.returncode == 3, proc.stderr
    assert "pilot active" in proc.stderr and re.search(r"rank 0 \(on [^)]+\) failed first", proc.stderr)
    assert "rank 0 fails on purpose" in proc.stderr
    assert f"{tmp_path}/rank-<r>.out" in proc.stderr  # where every rank's logs are
    time.sleep(1)
    assert not leftovers(str(tmp_path))
    sid = [w for w in proc.stderr.split() if w.startswith("rp.session.")]
    assert sid and not leftovers(sid[0].rstrip(")"))
    assert not (Path.home() / "radical.pilot.sandbox" / sid[0].rstrip(")")).exists()


def test_keep_warm_service_starts_on_first_use_and_closes_when_idle(tmp_path: Path) -> None:
    """With no service up, a launch starts one (like a build daemon); the next launch reuses it; it closes when idle."""
    home = tmp_path / "home"
    env = {"DEEPRC_HOME": str(home)}
    args = ["--keep-warm", "0.2", "--ranks", "2", str(SCRIPTS / "print_wiring.py")]
    first = run_cli(args, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "starting a pilot service that stays up 0.2 min" in first.stderr and "pilot service up" in first.stderr
    t0 = time.monotonic()
    second = run_cli(args, env=env)
    warm_s = time.monotonic() - t0
    assert second.returncode == 0, second.stderr[-3000:]
    assert "submitting to the running pilot service" in second.stderr and "starting" not in second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["world"] == 2
    log = home / "service" / "service.log"
    deadline = time.monotonic() + 180
    while "closed" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(1)
    text = log.read_text()
    assert "idle for 12 s (no client, no task): closing" in text and "closed" in text, text[-2000:]
    sid = re.findall(r"session (rp\.session\.[\w.-]+)\)", text)
    assert sid and not leftovers(sid[0])
    assert run_cli(["status"], env=env).returncode == 1  # no service any more
    print(f"warm launch through the auto-started service: {warm_s:.2f}s")


def _square(x: int) -> int:
    return x * x


def test_pipelines_in_one_pilot(deeprc_home: Path, tmp_path: Path) -> None:
    """3 pipelines (2-rank join, then 2-rank training) concurrently in one pilot; one fails alone."""
    from deeprc_launch import Launcher

    with Launcher(cores=6, walltime=20) as launcher:
        pipes = []
        for i in range(3):
            out = tmp_path / f"p{i}"
            join = launcher.submit(
                str(SCRIPTS / "join_task.py"), [str(out)] + (["fail"] if i == 1 else []), ranks=2, name=f"join{i}"
            )
            train = launcher.submit(str(SCRIPTS / "train_task.py"), [str(out)], ranks=2, after=[join], name=f"train{i}")
            pipes.append((join, train))
        fn = launcher.submit(_square, [7], name="square")
        launcher.wait(timeout=400)
        assert fn.result() == 49
    for i, (join, train) in enumerate(pipes):
        if i == 1:
            assert join.exit_code == 1 and "join failed on purpose" in (join.error or "")
            assert train.state == "CANCELED" and "dependency" in (train.error or "")
        else:
            assert join.ok and train.ok, (join.error, train.error)
            assert "TRAIN_OK rows=100 reduced=200" in Path(train.stdout_path).read_text()
    # Concurrency: every join ended before any training ended (not one pipeline after another).
    join_ends = [max(e.time for e in j.wait().exits.values()) for j, _ in pipes]
    train_ends = [max(e.time for e in t.wait().exits.values()) for i, (_, t) in enumerate(pipes) if i != 1]
    assert max(join_ends) < min(train_ends)
