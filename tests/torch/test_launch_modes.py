"""Every way Lightning users launch a script, with the documented default DataModule (docs/torch.md's table).

Each test is one row of the launch-mode table: a real launcher (torchrun, mpirun, or
Lightning's own launcher from ``python train.py``) starts tests/torch/scripts/lightning_modes.py,
which trains one epoch on the first 3,000 rows of ETTh1 with ``split=(0.8, 0.2)`` and no
``even=``. A row either trains with every validation sample seen exactly once on the right
rank count, or fails on every rank before the first step with a message naming the fix;
none trains wrongly with exit 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pytest

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]
from tests.support.ranks import MPIRUN_ROOT_ENV, free_port, launcher_free_env, mpirun_available, mpirun_command  # noqa: E402

SCRIPT = Path(__file__).with_name("scripts") / "lightning_modes.py"
REPO = Path(__file__).resolve().parents[2]
ROWS, TRAIN, VAL, BATCH = 3000, 2400, 600, 64

pytestmark = [pytest.mark.torch]


def _launch(how: str, out: Path, strategy: str, n: int = 2, devices: int = 1) -> subprocess.CompletedProcess[str]:
    env = launcher_free_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("DEEPRC_COMM_TIMEOUT", "60")
    script = [str(SCRIPT), str(out), strategy, str(devices)]
    if how == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n)]
        cmd += ["--master-addr", "127.0.0.1", "--master-port", str(free_port()), *script]
    elif how == "mpirun":
        env.update(MPIRUN_ROOT_ENV)
        cmd = mpirun_command(n, [sys.executable, *script])
    else:  # python train.py: Lightning starts the processes itself
        cmd = [sys.executable, *script]
    return subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True, timeout=300)


def _results(out: Path, n: int, proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr[-4000:]
    files = sorted(out.glob("rank*.json"))
    assert len(files) == n, f"{len(files)} ranks trained, expected {n}: {proc.stderr[-2000:]}"
    return [json.loads(f.read_text()) for f in files]


def _check_exactly_once(values: list[dict[str, Any]], n: int) -> None:
    """n ranks, one model: no training sample twice, at most n x batch skipped; every validation sample once."""
    assert [v["global_rank"] for v in values] == list(range(n))
    assert {v["world_size"] for v in values} == {n} and {v["table_world"] for v in values} == {n}
    train = [i for v in values for i in v["train_ids"]]
    assert len(train) == len(set(train)), "a training sample was seen twice in one epoch"
    assert set(train) <= set(range(TRAIN)) and len(train) >= TRAIN - n * BATCH
    val = sorted(i for v in values for i in v["val_ids"])
    assert val == list(range(VAL)), "every validation sample exactly once"
    assert all(v["val_local_rows"] > 0 for v in values), "every rank has validation rows"
    # a time split: validation is rows 2400..2999 of the file, after the training rows
    hufl = pacsv.read_csv(REPO / "data" / "ett" / "ETTh1.csv").column("HUFL").to_numpy()
    for v in values:
        for i, x0 in zip(v["val_ids"], v["val_first"]):
            assert abs(hufl[TRAIN + i] - x0) < 1e-4


def _check_refused(out: Path, proc: subprocess.CompletedProcess[str]) -> None:
    """Failed before training, with the message that names the strategy to use."""
    assert proc.returncode != 0
    assert not list(out.glob("rank*.json")), "no rank may train"
    text = proc.stdout + proc.stderr
    assert "started 2 ranks" in text and "DeepRCStrategy" in text and "strategy='ddp'" in text, text[-3000:]


def test_torchrun_deeprc_strategy_and_lightning_ddp_read_the_same_samples(tmp_path: Path) -> None:
    """torchrun x DeepRCStrategy, torchrun x strategy='ddp': both train right, on the same samples."""
    (a := tmp_path / "deeprc").mkdir()
    (b := tmp_path / "ddp").mkdir()
    ours = _results(a, 2, _launch("torchrun", a, "deeprc"))
    theirs = _results(b, 2, _launch("torchrun", b, "ddp", devices=2))
    _check_exactly_once(ours, 2)
    _check_exactly_once(theirs, 2)
    assert [v["train_ids"] for v in ours] == [v["train_ids"] for v in theirs]
    assert {v["even"] for v in ours} == {"rebalance"}  # the split's parts were spread over the ranks


def test_torchrun_three_ranks_default_split(tmp_path: Path) -> None:
    """3 ranks, split=(0.8, 0.2) and default even: every rank trains and validates."""
    _check_exactly_once(_results(tmp_path, 3, _launch("torchrun", tmp_path, "deeprc", n=3)), 3)


def test_torchrun_with_the_default_single_device_trainer_fails_on_every_rank(tmp_path: Path) -> None:
    """torchrun x Trainer() without a DDP strategy: was two models on two halves with exit 0."""
    _check_refused(tmp_path, _launch("torchrun", tmp_path, "default"))


def test_lightning_launcher_ddp(tmp_path: Path) -> None:
    """python train.py x strategy='ddp', devices=2: Lightning's own launcher starts the second process."""
    _check_exactly_once(_results(tmp_path, 2, _launch("python", tmp_path, "ddp", devices=2)), 2)


def test_lightning_launcher_three_processes(tmp_path: Path) -> None:
    """python train.py x strategy='ddp', devices=3: the default split on 3 ranks."""
    _check_exactly_once(_results(tmp_path, 3, _launch("python", tmp_path, "ddp", devices=3)), 3)


def test_ddp_spawn(tmp_path: Path) -> None:
    """python train.py x strategy='ddp_spawn', devices=2: was every rank on the whole table with exit 0."""
    _check_exactly_once(_results(tmp_path, 2, _launch("python", tmp_path, "ddp_spawn", devices=2)), 2)


def test_single_process_registered_strategy_name(tmp_path: Path) -> None:
    """python train.py x strategy='deeprc' (the registered name): one rank, everything once."""
    _check_exactly_once(_results(tmp_path, 1, _launch("python", tmp_path, "deeprc_name")), 1)


@pytest.mark.mpi
@pytest.mark.skipif(not mpirun_available(), reason="mpirun not installed")
def test_mpirun_lightning_ddp_and_the_default_trainer(tmp_path: Path) -> None:
    """mpirun x strategy='ddp' trains right; mpirun x Trainer() fails on every rank."""
    (a := tmp_path / "ddp").mkdir()
    (b := tmp_path / "default").mkdir()
    _check_exactly_once(_results(a, 2, _launch("mpirun", a, "ddp", devices=2)), 2)
    _check_refused(b, _launch("mpirun", b, "default"))
