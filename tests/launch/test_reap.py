"""The reaper of a local pilot's leftovers ends a process tree that keeps forking, not a snapshot of it.

The CI failure it answers: Ctrl-C of ``up`` while the pilot started left ``rp.agent.0`` running,
because the bootstrapper was killed after it had forked the agent but before the next scan.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from deeprc_launch.session import _processes_in, reap_local_session, session_roots

# A bootstrapper stand-in: ignores SIGTERM and forks a detached child every 10 ms (bootstrap_0.sh
# forks the agent in the background the same way).
FORKER = "trap '' TERM; while true; do (setsid sleep 300 &); sleep 0.01; done"


def test_reap_ends_a_forking_tree_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = f"rp.session.reaptest-{os.getpid()}"
    monkeypatch.setenv("RADICAL_PILOT_BASE", str(tmp_path))
    box = tmp_path / sid / "pilot.0000"
    box.mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "300"], cwd=tmp_path)  # outside the session's folders
    forker = subprocess.Popen(["bash", "-c", FORKER], cwd=box, start_new_session=True)
    roots = session_roots(sid)
    try:
        deadline = time.monotonic() + 30
        while len(_processes_in(roots)) < 5:
            assert time.monotonic() < deadline, "the forker never forked"
            time.sleep(0.05)
        ended = reap_local_session(sid, settle_s=1.0)
        assert ended >= 5
        assert forker.wait(timeout=10) == -signal.SIGKILL
        assert not _processes_in(roots)
        time.sleep(0.5)  # nothing frozen-then-forgotten forks later
        assert not _processes_in(roots)
        assert bystander.poll() is None, "a process outside the session's folders was ended"
    finally:
        for pid in _processes_in(roots):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        bystander.kill()
        forker.kill()


def test_reap_of_an_empty_session_returns_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADICAL_PILOT_BASE", str(tmp_path))
    t0 = time.monotonic()
    assert reap_local_session("rp.session.none", settle_s=0.5) == 0
    assert time.monotonic() - t0 < 10
