"""(d) SIGKILL of the pilot agent mid-task, (e) Ctrl-C of deeprc-launch and of ``up`` while the pilot starts.

Real local pilots (each case starts its own). "Nothing left running" means no process whose
command line or working folder names the RP session or the run folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.launch.conftest import REPO, SCRIPTS

pytestmark = [pytest.mark.launcher, pytest.mark.slow]

CLI = [sys.executable, "-m", "deeprc_launch"]


def _leftovers(*markers: str) -> list[str]:
    me = psutil.Process()
    mine = {me.pid, *(a.pid for a in me.parents())}
    found = []
    for p in psutil.process_iter(["cmdline", "cwd", "status"]):
        if p.pid in mine or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        text = " ".join(p.info["cmdline"] or []) + " " + (p.info["cwd"] or "")
        if any(m in text for m in markers):
            found.append(f"{p.pid}: {text[:160]}")
    return found


def _wait_gone(markers: list[str], timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _leftovers(*markers)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _wait_for(path: Path, pattern: str, proc: subprocess.Popen[Any], timeout: float = 400) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, path.read_text() if path.exists() else "")
        if m:
            return m
        assert proc.poll() is None, path.read_text()
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} never appeared in {path}:\n{path.read_text()}")


def _start(args: list[str], err: Path, env: dict[str, str] | None = None) -> subprocess.Popen[Any]:
    with err.open("w") as fh:
        return subprocess.Popen(
            [*CLI, *args],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=fh,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # a failed case kills the whole group (RP's client forks helpers)
        )


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _interrupt_at_pilot_start(args: list[str], err: Path, env: dict[str, str] | None = None) -> tuple[str, int, float]:
    """Start deeprc-launch, Ctrl-C it once the pilot is submitted; (session id, exit code, seconds to exit)."""
    proc = _start(args, err, env)
    try:
        sid = _wait_for(err, r"session (rp\.session\.[\w.-]+)\)", proc).group(1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=240)
        return sid, code, time.monotonic() - t0
    finally:
        _kill_group(proc)


def test_sigkill_of_the_pilot_agent_mid_task(deeprc_home: Path, tmp_path: Path, record: Any) -> None:
    logs, err = tmp_path / "logs", tmp_path / "client.err"
    proc = _start(["--no-service", "--ranks", "2", "--log-dir", str(logs), str(SCRIPTS / "sleeper.py")], err)
    try:
        sid = _wait_for(err, r"session (rp\.session\.[\w.-]+)\)", proc).group(1)
        deadline = time.monotonic() + 300
        while not all((logs / f"rank-{r}.out").exists() and (logs / f"rank-{r}.out").read_text() for r in (0, 1)):
            assert time.monotonic() < deadline and proc.poll() is None, err.read_text()
            time.sleep(0.2)
        agents = [
            p
            for p in psutil.process_iter(["cmdline", "cwd"])
            if (p.info["cmdline"] or [""])[0] == "rp.agent.0" and sid in (p.info["cwd"] or "")
        ]
        assert len(agents) == 1, agents
        t_kill = time.monotonic()
        agents[0].kill()
        code = proc.wait(timeout=240)
        detected = time.monotonic() - t_kill
    finally:
        _kill_group(proc)
    text = err.read_text()
    assert code != 0, text
    assert "pilot agent" in text and (
        "stopped without recording an exit" in text or "still reports the task running" in text
    ), text
    left = _wait_gone([sid, str(logs)])
    assert not left, left
    record(
        "d_sigkill_pilot_agent",
        fault="SIGKILL of the RP agent (rp.agent.0) of an own local pilot while a 2-rank task runs",
        detection_s=round(detected, 2),
        note="client exit after the kill: ranks end with their launcher, 20 s for RP to report it, cancel, session close",
        client_exit_code=code,
        left_running=len(left),
        lost="nothing (the task's ranks and every pilot process gone; the client says why)",
    )


def test_ctrl_c_of_deeprc_launch_while_the_pilot_starts(deeprc_home: Path, tmp_path: Path, record: Any) -> None:
    logs, err = tmp_path / "logs", tmp_path / "client.err"
    sid, code, stopped = _interrupt_at_pilot_start(
        ["--no-service", "--ranks", "2", "--log-dir", str(logs), str(SCRIPTS / "sleeper.py")], err
    )
    assert code == 130, err.read_text()
    left = _wait_gone([sid, str(logs)])
    assert not left, left
    record(
        "e_ctrl_c_deeprc_launch_pilot_start",
        fault="Ctrl-C (SIGINT) of `deeprc-launch --no-service` right after the pilot was submitted",
        detection_s=round(stopped, 2),
        note="seconds from Ctrl-C until the client exited, the session closed",
        left_running=len(left),
        lost="nothing (no pilot process left)",
    )


def test_ctrl_c_of_up_while_the_pilot_starts(tmp_path: Path, record: Any) -> None:
    home, err = tmp_path / "home", tmp_path / "up.err"
    sid, code, stopped = _interrupt_at_pilot_start(["up", "--walltime", "10"], err, env={"DEEPRC_HOME": str(home)})
    text = err.read_text()
    assert code == 130, text
    assert "stopping the pilot service that was starting" in text
    left = _wait_gone([sid, str(home)])
    assert not left, left
    assert not (home / "service" / "pilot.sock").exists() and not (home / "service" / "state.json").exists()
    record(
        "e_ctrl_c_up_pilot_start",
        fault="Ctrl-C (SIGINT) of `deeprc-launch up` while its service's pilot starts",
        detection_s=round(stopped, 2),
        note="seconds from Ctrl-C until `up` exited, after the service released the pilot",
        left_running=len(left),
        lost="nothing (no service, pilot, socket or state file left)",
    )


def test_two_concurrent_ups_start_one_pilot(tmp_path: Path, record: Any) -> None:
    """The race of issue 14: two `up`s at once used to start two pilots and orphan one."""
    home = tmp_path / "home"
    env = {**os.environ, "DEEPRC_HOME": str(home)}
    t0 = time.monotonic()
    ups = [
        subprocess.Popen(
            [*CLI, "up", "--walltime", "10"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=400)[0] for p in ups]
    up_s = time.monotonic() - t0
    try:
        assert [p.returncode for p in ups] == [0, 0], outs
        assert sum("another pilot service" in o or "already" in o for o in outs) >= 1, outs
        log = (home / "service" / "service.log").read_text()
        sids = set(re.findall(r"session (rp\.session\.[\w.-]+)\)", log))
        assert len(sids) == 1, log
        assert "not starting" in log  # the second serve saw the lock and started no pilot
    finally:
        down = subprocess.run([*CLI, "down"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    left = _wait_gone([*sids, str(home)])
    assert not left, left
    record(
        "e_concurrent_ups",
        fault="two `deeprc-launch up` started at the same moment on one DEEPRC_HOME",
        detection_s=round(up_s, 2),
        note="seconds until both `up`s returned 0 with one service; one pilot started, none orphaned",
        pilots_started=len(sids),
        left_running=len(left),
        lost="nothing (one service; `down` leaves no process)",
    )
