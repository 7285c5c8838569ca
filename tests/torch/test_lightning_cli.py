"""LightningCLI with DeepRCDataModule: paths from YAML and the command line, the registered strategy, --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]
from tests.support.ranks import free_port, launcher_free_env  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLI = [str(REPO / "examples" / "lightning_cli.py")]
CONFIG = ["--config", str(REPO / "examples" / "lightning_cli.yaml")]

pytestmark = [pytest.mark.torch]


def _run(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = launcher_free_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_lists_the_batch_settings_with_their_defaults() -> None:
    out = _run([sys.executable, *CLI, "fit", "--help"]).stdout
    for text in ("--data.shuffle", "--data.seed", "--data.even {auto,drop,pad,rebalance}", "default: auto"):
        assert text in out, text
    assert "default: 0" in out.split("--data.seed", 2)[-1][:300]


def test_yaml_csv_path_under_torchrun_with_the_registered_strategy(tmp_path: Path) -> None:
    """source: data/ett/ETTh1.csv in YAML (was read as file contents), 2 ranks, --trainer.strategy deeprc."""
    (tmp_path / "data").symlink_to(
        REPO / "data"
    )  # the YAML's relative path, from a scratch folder (config.yaml lands there)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port())]
    args = ["--trainer.strategy", "deeprc", "--trainer.enable_progress_bar", "false"]
    proc = _run([*cmd, *CLI, "fit", *CONFIG, *args], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DeepRCStrategy" in proc.stderr or "Starting with 2 processes" in proc.stderr + proc.stdout


def test_command_line_csv_path_from_another_folder(tmp_path: Path) -> None:
    """--data.source with an absolute CSV path, one process, run from a folder that holds nothing."""
    source = str(REPO / "data" / "ett" / "ETTh1.csv")
    proc = _run([sys.executable, *CLI, "fit", *CONFIG, "--data.source", source, "--trainer.max_steps", "3"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "date,HUFL" not in proc.stderr  # the file's contents never stand in for its path
