"""Run a rank body (``tests.support.runner``) across the simulated cluster's nodes with a real launcher.

* ``srun``: ``srun -N2 --ntasks-per-node=2`` from the head (login) node;
* ``mpirun``: ``mpirun --host node1:2,node2:2`` from node1 (daemons on node2 through the rsh agent);
* ``torchrun``: one ``torchrun --nnodes 2 --nproc-per-node 2 --node-rank i`` on each node.

Every wait is bounded; whatever is still running at the deadline is killed.
"""

from __future__ import annotations

import pickle
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeprc_core import env_vars
from tests.support.cluster import Cluster, _kill_group
from tests.support.ranks import REPO, RankResult, launcher_free_env

LAUNCHERS = ("srun", "mpirun", "torchrun")


@dataclass
class ClusterRun:
    """What a run across the nodes left: each rank's result (None: none) and the launchers' output."""

    returncodes: list[int | None]
    output: str
    values: dict[int, Any]
    seconds: float

    def ranks(self, n: int) -> list[RankResult]:
        """One RankResult per rank (returncode 0 when the rank left a result)."""
        return [RankResult(r, 0 if r in self.values else 1, "", "", self.values.get(r)) for r in range(n)]


def rank_command(file: str | Path, func: str, outdir: Path, args: Sequence[str] = ()) -> list[str]:
    """The command line of one rank: the test runner calling ``func`` from ``file``."""
    return ["-m", "tests.support.runner", str(file), func, str(outdir), *args]


def launch(
    cluster: Cluster,
    launcher: str,
    file: str | Path,
    func: str,
    *,
    per_node: int = 2,
    timeout: float = 300.0,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    extra: Sequence[str] = (),
    kill_on_bad_exit: bool = True,
) -> tuple[list[subprocess.Popen[str]], Path]:
    """Start ``func`` on ``per_node`` ranks of every compute node; returns the launcher processes and the result folder.

    ``timeout // 3`` becomes DEEPRC_COMM_TIMEOUT unless ``env`` says otherwise; ``kill_on_bad_exit``
    False lets srun leave the other ranks running when one dies (they must then fail on their own).
    """
    outdir = Path(tempfile.mkdtemp(prefix="drc-run-", dir=cluster.root))
    outdir.chmod(0o777)
    base = launcher_free_env()
    base.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", DEEPRC_COMM_TIMEOUT=str(int(timeout // 3)))
    if kill_on_bad_exit is False and "DEEPRC_COMM_TIMEOUT" not in (env or {}):
        del base["DEEPRC_COMM_TIMEOUT"]  # fault tests: the default bound
    base.update(env or {})
    # Jobs started without deeprc-launch share the TCP communicator's secret the documented way:
    # one value exported to every rank (srun/mpirun/torchrun pass the environment on).
    base.setdefault(env_vars.JOB_SECRET, secrets.token_hex(32))
    py = sys.executable
    body = rank_command(file, func, outdir, args)
    nodes = [n.name for n in cluster.compute]
    log = (outdir / "launcher.log").open("w")
    common: dict[str, Any] = dict(env=base, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if launcher == "srun":
        cmd = ["srun", f"-N{len(nodes)}", f"--ntasks-per-node={per_node}", "-l", *extra]
        cmd.insert(3, f"--kill-on-bad-exit={int(kill_on_bad_exit)}")
        return [cluster.popen("head", [*cmd, py, *body], **common)], outdir
    if launcher == "mpirun":
        hosts = ",".join(f"{n}:{per_node}" for n in nodes)
        cmd = ["mpirun", "--host", hosts, "--bind-to", "none", "--tag-output", *extra]
        return [cluster.popen(nodes[0], [*cmd, py, *body], **common)], outdir
    if launcher == "torchrun":
        port = str(random.randrange(29500, 39000))
        procs = []
        for i, node in enumerate(nodes):
            cmd = [py, "-m", "torch.distributed.run", f"--nnodes={len(nodes)}", f"--nproc-per-node={per_node}"]
            cmd += [f"--node-rank={i}", f"--master-addr={nodes[0]}", f"--master-port={port}", *extra]
            procs.append(cluster.popen(node, [*cmd, *body], **common))
        return procs, outdir
    raise ValueError(f"launcher must be one of {LAUNCHERS}, not {launcher!r}")


def run_across(
    cluster: Cluster, launcher: str, file: str | Path, func: str, *, expect_failure: bool = False, **options: Any
) -> ClusterRun:
    """Run ``func`` across the nodes (``options`` as for :func:`launch`) and wait at most ``timeout``.

    Raises AssertionError when it fails unexpectedly (or succeeds while ``expect_failure``).
    """
    start = time.monotonic()
    timeout = float(options.setdefault("timeout", 300.0))
    procs, outdir = launch(cluster, launcher, file, func, **options)
    try:
        run = wait_run(procs, outdir, timeout, start)
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    world = int(options.get("per_node", 2)) * len(cluster.compute)
    ok = all(rc == 0 for rc in run.returncodes) and len(run.values) == world
    if not ok and not expect_failure:
        raise AssertionError(
            f"{launcher} run of {func} failed: exit codes {run.returncodes}, results from ranks "
            f"{sorted(run.values)} of {world}\n{run.output[-6000:]}"
        )
    if ok and expect_failure:
        raise AssertionError(f"{launcher} run of {func} was expected to fail but every rank succeeded")
    return run


def wait_run(procs: list[subprocess.Popen[str]], outdir: Path, timeout: float, start: float) -> ClusterRun:
    """Wait for the launcher processes (killing them at the deadline) and collect the ranks' results."""
    deadline = start + timeout
    timed_out = False
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    for p in procs:
        _kill_group(p)
    output = (outdir / "launcher.log").read_text(errors="replace")
    if timed_out:
        output += f"\n[deeprc test] launcher killed after {timeout:g}s"
    values = {int(f.stem.split("-")[1]): pickle.loads(f.read_bytes()) for f in outdir.glob("rank-*.pkl")}
    return ClusterRun([p.returncode for p in procs], output, values, time.monotonic() - start)
