"""Faults across nodes: a rank on node2 SIGKILLed mid-epoch, and node2's slurmd lost while a job runs.

Either way every rank ends in bounded time, the failure names where it happened, and no
process of the job is left on any node.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from deeprc_core import env_vars
from tests.cluster.launch import launch, wait_run
from tests.support.cluster import Cluster, ClusterError

BODIES = Path(__file__).with_name("bodies.py")
DEFAULT_BOUND = env_vars.DEFAULT_COMM_TIMEOUT  # what a rank waits for a lost peer at most, by default

pytestmark = [pytest.mark.slow, pytest.mark.torch]


def _job_processes(cluster: Cluster) -> dict[str, list[int]]:
    """Processes on each compute node other than the holder and slurmd (i.e. what a job left)."""
    keep = {n.pid for n in cluster.compute} | {p.pid for p in cluster.daemons}
    left = {}
    for node in cluster.compute:
        pids = [p for p in cluster.pids_on(node.name) if p not in keep]
        if pids:
            left[node.name] = pids
    return left


def _wait_no_job_processes(cluster: Cluster, timeout: float = 60) -> dict[str, list[int]]:
    deadline = time.monotonic() + timeout
    while (left := _job_processes(cluster)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_rank_on_node2_sigkilled_mid_epoch(cluster: Cluster) -> None:
    # No --kill-on-bad-exit: srun leaves the others running, so they must notice and exit on their own
    # (DEEPRC_COMM_TIMEOUT stays at its default).
    started = time.monotonic()
    procs, outdir = launch(
        cluster, "srun", BODIES, "lightning_rank3_sigkilled", timeout=DEFAULT_BOUND * 3, kill_on_bad_exit=False
    )
    run = wait_run(procs, outdir, DEFAULT_BOUND + 200, started)
    assert run.returncodes[0] not in (0, None), run.output[-3000:]
    assert run.seconds < DEFAULT_BOUND, f"the job took {run.seconds:.0f}s to fail"
    assert "SIGKILL to myself" in run.output
    # srun names the rank and the node that died.
    assert "node2: task 3: Killed" in run.output, run.output[-3000:]
    assert _wait_no_job_processes(cluster) == {}


def test_slurmd_of_node2_killed_while_a_job_runs(cluster: Cluster) -> None:
    script = cluster.root / "loop.sh"
    runner = f"{__import__('sys').executable} -m tests.support.runner {BODIES} allreduce_loop {cluster.root} 600"
    script.write_text(f"#!/bin/sh\nsrun -N2 --ntasks-per-node=2 {runner}\n")
    script.chmod(0o755)
    out = cluster.root / "loop-%j.out"
    sub = cluster.run(
        "head",
        ["sbatch", "--parsable", "--no-requeue", "-N2", "--ntasks-per-node=2", f"--output={out}", str(script)],
        check=True,
        cwd=Path(__file__).parents[2],
    )
    job = sub.stdout.strip().split(";")[0]
    try:
        # Wait until the step runs on both nodes, then lose node2's slurmd.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            steps = cluster.run("head", ["squeue", "-h", "-s", "-j", job, "-o", "%i %N"]).stdout
            if f"{job}.0 node[1-2]" in steps:
                break
            time.sleep(1)
        else:
            raise ClusterError(f"step {job}.0 never ran on both nodes: {steps!r}")
        time.sleep(5)
        slurmd = cluster.slurmds["node2"]
        slurmd.kill()
        slurmd.wait(timeout=10)
        lost = time.monotonic()
        # The controller declares node2 dead (SlurmdTimeout) and ends the job: no hang.
        state = ""
        while time.monotonic() - lost < 120:
            state = cluster.run("head", ["scontrol", "show", "job", job]).stdout
            if "JobState=RUNNING" not in state and "JobState=COMPLETING" not in state:
                break
            time.sleep(1)
        assert "JobState=NODE_FAIL" in state or "JobState=FAILED" in state, state
        assert "node2" in cluster.run("head", ["sinfo", "-h", "-t", "down", "-o", "%N"]).stdout
        # The ranks on node2 lose their peers and exit by themselves; nothing of the job stays on node1.
        left = _wait_no_job_processes(cluster, timeout=90)
        assert left == {}, left
    finally:
        cluster.run("head", ["scancel", job])
        cluster.restart_slurmd("node2")
