"""CLI parsing, --dry-run, and the bootstrap under a plain mpirun (no pilot)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deeprc_launch.cli import build_parser, main, split_argv

from .conftest import REPO, SCRIPTS


def test_split_argv_keeps_script_options() -> None:
    p = build_parser()
    assert split_argv(p, ["--ranks", "2", "-v", "s.py", "--ranks", "9"]) == (
        ["--ranks", "2", "-v"],
        ["s.py", "--ranks", "9"],
    )
    assert split_argv(p, ["--ranks=2", "-m", "pkg.mod", "-x"]) == (["--ranks=2"], ["-m", "pkg.mod", "-x"])


def test_dry_run_two_node_gpu_job_on_cluster(capsys: pytest.CaptureFixture[str], deeprc_home: Path) -> None:
    rc = main(
        [
            "--dry-run",
            "--resource",
            "ornl.frontier",
            "--queue",
            "batch",
            "--project",
            "ABC123",
            "--nodes",
            "2",
            "--ranks-per-node",
            "4",
            "--gpus-per-rank",
            "1",
            "--walltime",
            "30",
            "--env",
            'FOO={"a": 1}',
            "train.py",
            "--epochs",
            "3",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    pd, td, envs = out["pilot_description"], out["task_description"], out["rank_environments"]
    assert pd == {
        "resource": "ornl.frontier",
        "runtime": 30,
        "exit_on_error": False,
        "nodes": 2,
        "queue": "batch",
        "project": "ABC123",
    }
    assert td["ranks"] == 8 and td["gpus_per_rank"] == 1 and td["ranks_per_node"] == 4
    assert td["arguments"][-3:] == [os.path.abspath("train.py"), "--epochs", "3"]
    assert "--host" not in td["arguments"]
    assert len(envs) == 8
    e5 = envs[5]
    assert e5["DEEPRC_RANK"] == "5" and e5["DEEPRC_LOCAL_RANK"] == "1" and e5["DEEPRC_NODE_RANK"] == "1"
    assert e5["MASTER_ADDR"] == "<node0>" and e5["DEEPRC_BACKEND"] == "nccl"
    assert e5["CUDA_VISIBLE_DEVICES"] == "0,1,2,3" and e5["FOO"] == '{"a": 1}'
    assert json.loads(e5["TF_CONFIG"])["cluster"]["worker"][4] == "<node1>:<port>"


def test_bootstrap_under_mpirun(tmp_path: Path) -> None:
    """The bootstrap alone under Open MPI: ranks agree on ports, detect_wiring() matches, logs per rank."""
    if not shutil.which("mpirun"):
        pytest.skip("no mpirun")
    env = {
        **os.environ,
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_btl_tcp_if_include": "lo",
        "OMPI_MCA_oob_tcp_if_include": "lo",
        "OMPI_MCA_rmaps_base_oversubscribe": "1",
        "OMPI_MCA_hwloc_base_binding_policy": "none",
    }
    cmd = [
        "mpirun",
        "-np",
        "2",
        sys.executable,
        "-m",
        "deeprc_launch.bootstrap",
        "--run-dir",
        str(tmp_path),
        "--host",
        "127.0.0.1",
        "--env",
        "EXTRA=x y",
        "--",
        sys.executable,
        str(SCRIPTS / "print_wiring.py"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    outs = [json.loads((tmp_path / f"rank-{r}.out").read_text()) for r in range(2)]
    for r, o in enumerate(outs):
        assert (o["rank"], o["world"], o["local_rank"], o["source"]) == (r, 2, r, "deeprc")
        assert o["master_addr"] == "127.0.0.1" and o["master_port"] == outs[0]["master_port"]
        assert o["env"]["EXTRA"] == "x y" and o["env"]["CUDA_VISIBLE_DEVICES"] == ""
        assert json.loads(o["env"]["TF_CONFIG"])["task"]["index"] == r
    assert sorted(json.loads((tmp_path / f"rank-{r}.exit").read_text())["code"] for r in range(2)) == [0, 0]
