"""``--timeout`` is enforced by Deep RC's bootstrap, not by RADICAL-Pilot's task description.

RP's own timeout watcher loops without sleeping while any task has a timeout: a local pilot
then burns a whole CPU for the task's life (measured: 2,834 CPU-s in a 2,781 s run). The
bootstrap stops the ranks itself and exits 124, as ``timeout(1)`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from deeprc_launch.descriptions import JobSpec, task_description
from deeprc_launch.jobspec import TIMEOUT_EXIT

REPO = Path(__file__).resolve().parents[2]


def test_timeout_travels_to_the_bootstrap_not_to_rp(tmp_path: Path) -> None:
    job = JobSpec(command=[sys.executable, "x.py"], run_dir=str(tmp_path), timeout=90.0)
    td = task_description(job, "deeprc.local")
    assert "timeout" not in td  # RP's watcher would spin a CPU
    args = td["arguments"]
    assert args[args.index("--timeout") + 1] == "90" and args.index("--timeout") < args.index("--")
    untimed = task_description(JobSpec(command=[sys.executable, "x.py"], run_dir=str(tmp_path)), "deeprc.local")
    assert "--timeout" not in untimed["arguments"]


def test_bootstrap_stops_a_rank_past_its_timeout(tmp_path: Path) -> None:
    # the command ignores SIGTERM: the bootstrap must still end it (SIGKILL after its grace)
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    )
    cmd = [sys.executable, "-m", "deeprc_launch.bootstrap", "--run-dir", str(tmp_path), "--run-id", "r1"]
    cmd += ["--host", "127.0.0.1", "--timeout", "2", "--", sys.executable, "-c", stubborn]
    env = {**os.environ, "RP_RANK": "0", "RP_RANKS": "1"}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    took = time.monotonic() - t0
    assert proc.returncode == TIMEOUT_EXIT, proc.stderr
    assert took < 20, took  # 2 s, then at most the 3 s grace; nowhere near the command's 60
    err = (tmp_path / "rank-0.err").read_text() + proc.stderr
    assert "ran past --timeout 2 s" in err, err
    assert json.loads((tmp_path / "rank-0.exit").read_text())["code"] == TIMEOUT_EXIT
