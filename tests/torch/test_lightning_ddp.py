"""Real Lightning Trainers on real processes: DDP on CPU/gloo under torchrun-style env vars and mpirun."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]
from tests.support.ranks import mpirun_available, run_ranks  # noqa: E402

BODY = Path(__file__).with_name("ranks_lightning.py")
ETT_ROWS = 17420
TRAIN_ROWS = round(ETT_ROWS * 0.7)

pytestmark = [pytest.mark.torch, pytest.mark.mpi]


def _flatten(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


def _check_training(values: list[dict[str, Any]], n: int, per_node: int | None = None, comm: str = "torch") -> None:
    """Identical weights on every rank; every training row seen exactly once in the epoch.

    ``per_node`` ranks per node (default: all ``n`` on one host) fix the expected local and node ranks;
    ``comm`` is the core communicator the tables use (``mpi`` when MPI agreed the rendezvous first).
    """
    per_node = per_node or n
    for v in values[1:]:
        for k, w in values[0]["weights"].items():
            np.testing.assert_array_equal(v["weights"][k], w, err_msg=f"weights {k} differ between ranks")
    seen = sorted(_flatten([i for v in values for i in [_flatten(v["seen"])]]))
    assert values[0]["train_rows"] == TRAIN_ROWS
    assert seen == list(range(TRAIN_ROWS)), "each training row must be seen exactly once per epoch"
    assert {v["num_batches"] for v in values} == {len(values[0]["seen"])}, "every rank runs the same batches"
    assert all(len(v["seen"]) == v["num_batches"] for v in values)
    assert [v["global_rank"] for v in values] == list(range(n))
    assert [v["local_rank"] for v in values] == [r % per_node for r in range(n)]  # several ranks a host, devices=1
    assert [v["node_rank"] for v in values] == [r // per_node for r in range(n)]
    assert {v["world_size"] for v in values} == {n}
    assert {v["comm"] for v in values} == {comm}
    assert {v["backend"] for v in values} == {"gloo"}
    assert {v["sampler"] for v in values} == {"EpochSampler"}  # no DistributedSampler was injected
    assert len({round(v["val_loss"], 6) for v in values}) == 1


def test_three_uneven_ranks_torchrun_style_lightning() -> None:
    """3 ranks over 17,420 rows (uneven partitions), `import lightning` flavour."""
    results = run_ranks(BODY, "train", 3, launcher="env", timeout=240, args=("lightning",))
    values = [r.value for r in results]
    assert len({v["local_rows"] for v in values}) > 1 or TRAIN_ROWS % 3  # partitions really are uneven
    _check_training(values, 3)


@pytest.mark.skipif(not mpirun_available(), reason="mpirun not installed")
def test_mpirun_pytorch_lightning_and_mid_epoch_resume(tmp_path: Path) -> None:
    """2 ranks under mpirun, `import pytorch_lightning` flavour; then stop after 5 batches and resume."""
    results = run_ranks(
        BODY,
        "train_and_resume",
        2,
        launcher="mpirun",
        timeout=300,
        args=("pytorch_lightning",),
        env={"DEEPRC_TEST_CKPT": str(tmp_path)},
    )
    values = [r.value for r in results]
    _check_training(values, 2)
    for v in values:
        assert v["ckpt_state"]["train"]["epoch"] == 0 and v["ckpt_state"]["train"]["batch"] == 5
        assert len(v["first_part"]) == 5
        assert v["first_part"] + v["resumed"] == v["full"], "resumed run must see exactly the unseen batches"
    for k, w in values[0]["resumed_weights"].items():
        np.testing.assert_array_equal(values[1]["resumed_weights"][k], w)


@pytest.mark.parametrize(
    "launcher", ["env", pytest.param("mpirun", marks=pytest.mark.skipif(not mpirun_available(), reason="no mpirun"))]
)
def test_failing_rank_fails_the_job_in_bounded_time(launcher: str) -> None:
    """Rank 1 raises in training_step: every rank exits non-zero, rank 1's traceback is visible."""
    started = time.monotonic()
    results = run_ranks(
        BODY,
        "fail_in_step",
        2,
        launcher=launcher,
        timeout=120,
        args=("lightning",),
        expect_failure=True,
        env={"DEEPRC_COMM_TIMEOUT": "20"},
    )
    assert time.monotonic() - started < 100
    assert all(r.returncode not in (0, None) for r in results), [r.returncode for r in results]
    assert "deliberate failure on rank 1" in results[1].stderr
    assert "Traceback" in results[1].stderr


@pytest.mark.parametrize("root", ["0", "all"])
def test_trainer_predict_gives_every_row_once_in_global_order(root: str) -> None:
    """GatherPredictions + DeepRCDataModule(predict=...): padding removed, rows in global order, on root or all."""
    results = run_ranks(BODY, "predict_in_order", 3, launcher="env", timeout=240, args=(root,))
    total = 50 + 13 + 31
    expected = np.arange(total, dtype=np.float32) * sum(range(1, 7))  # sum_j (j+1) * row
    assert len({r.value["steps"] for r in results}) == 1  # equal predict steps on every rank (padded)
    holders = [r.value for r in results if r.value["index"] is not None]
    assert len(holders) == (1 if root == "0" else 3)
    for got in holders:
        np.testing.assert_array_equal(got["index"], np.arange(total))
        np.testing.assert_allclose(got["pred"], expected)
