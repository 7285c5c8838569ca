"""Issue 27 items 1-2 without a pilot: the preflight on the caller's machine, and a missing start folder.

A bad request is refused before any pilot or service is contacted, with the exit code the same
mistake gives at run time (compared against running the script with python directly). A rank
whose start folder does not exist fails, on every rank, with a message naming the folder, the
rank and the host: it never runs somewhere else.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deeprc_launch.cli import main

from .conftest import REPO, SCRIPTS

BOOTSTRAP_FAILED = 97


def _main_timed(args: list[str], home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, float]:
    monkeypatch.setenv("DEEPRC_HOME", str(home))
    t0 = time.monotonic()
    code = main(args)
    return code, time.monotonic() - t0


def _no_pilot(home: Path, err: str) -> None:
    assert "pilot submitted" not in err and "pilot service" not in err, err
    assert not (home / "sessions").exists() and not (home / "service").exists()  # nothing was started


@pytest.mark.parametrize("kind", ["missing", "syntax error"])
def test_bad_script_is_refused_before_any_pilot(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "train.py"
    if kind == "syntax error":
        script.write_text("import os\n\ndef broken(:\n    pass\n")
    home = tmp_path / "home"
    code, seconds = _main_timed(["--ranks", "2", str(script), "--epochs", "1"], home, monkeypatch)
    err = capsys.readouterr().err
    run_time = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60).returncode
    assert code == run_time == (2 if kind == "missing" else 1)  # what the ranks would have exited with
    if kind == "missing":
        assert f"can't open file {str(script)!r}" in err and "No such file" in err
    else:
        assert f"{script} does not compile" in err and "line 3" in err and "SyntaxError" in err
    _no_pilot(home, err)
    assert seconds <= 2.0, seconds  # the bound: reported within 2 s


def test_bad_interpreter_folder_and_size_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    script = str(SCRIPTS / "sleeper.py")
    cases = [
        (["--python", str(tmp_path / "nopython"), script], 127, "interpreter"),
        (["--chdir", str(tmp_path / "nowhere"), script], BOOTSTRAP_FAILED, "start folder"),
        (["--cores", "1", "--ranks", "3", script], 2, "need 3 cores; the pilot has 1"),
        (["no-such-command-xyz"], 127, "command not found"),
    ]
    for args, want, words in cases:
        code, _ = _main_timed(args, home, monkeypatch)
        err = capsys.readouterr().err
        assert code == want and words in err, (args, code, err)
        _no_pilot(home, err)


def test_cli_subprocess_reports_a_missing_script_fast(tmp_path: Path) -> None:
    """The whole command, interpreter start-up included, as a user runs it."""
    env = {**os.environ, "DEEPRC_HOME": str(tmp_path / "home")}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "deeprc_launch", "--ranks", "2", "missing.py"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    seconds = time.monotonic() - t0
    assert proc.returncode == 2 and "can't open file" in proc.stderr, proc.stderr
    _no_pilot(tmp_path / "home", proc.stderr)
    print(f"missing script reported in {seconds:.2f}s")


def _bootstrap_rank(run_dir: Path, rank: int, world: int, chdir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "RP_RANK": str(rank), "RP_RANKS": str(world)}
    cmd = [sys.executable, "-m", "deeprc_launch.bootstrap", "--run-dir", str(run_dir), "--run-id", "c1"]
    cmd += ["--host", "127.0.0.1", "--chdir", str(chdir), "--", sys.executable, "-c", "print('RAN')"]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_missing_start_folder_fails_every_rank_by_name(tmp_path: Path) -> None:
    """As on a cluster without a shared file system: every rank fails at once, naming the folder and host."""
    missing = tmp_path / "not-on-this-node"
    procs = [_bootstrap_rank(tmp_path, r, 2, missing) for r in range(2)]
    codes = [p.wait(timeout=60) for p in procs]
    assert codes == [BOOTSTRAP_FAILED, BOOTSTRAP_FAILED]
    for r in range(2):
        err = (tmp_path / f"rank-{r}.err").read_text()
        assert (
            f"rank 0 cannot start the command: the working folder {missing} does not exist on host {socket.gethostname()}"
            in err
        ), err
        assert "a file system the compute nodes share" in err and "--chdir DIR" in err
        assert "RAN" not in (tmp_path / f"rank-{r}.out").read_text()  # never ran anywhere else
    # A folder that exists is where the command starts.
    here = tmp_path / "here"
    here.mkdir()
    run2 = tmp_path / "run2"
    proc = subprocess.run(
        [sys.executable, "-m", "deeprc_launch.bootstrap", "--run-dir", str(run2), "--chdir", str(here), "--"]
        + [sys.executable, "-c", "import os; print(os.getcwd())"],
        env={**os.environ, "RP_RANK": "0", "RP_RANKS": "1"},
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0 and (run2 / "rank-0.out").read_text().strip() == str(here)
