"""Keras habits on Deep RC data: no steps_per_epoch, one BackupAndRestore folder for N workers, chief-only logs, NaN."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]
from tests.support.ranks import run_ranks  # noqa: E402

BODY = Path(__file__).with_name("ranks_keras_habits.py")
pytestmark = [pytest.mark.tensorflow, pytest.mark.mpi]


def _covers(values: list[dict[str, Any]], epoch: int, rows: int) -> None:
    """Every training sample of ``epoch`` once across the workers (nothing dropped: shards are equal)."""
    ids = sorted(i for v in values for b in v["batches"][epoch] for i in b)
    assert ids == list(range(rows)), f"epoch {epoch}: {len(ids)} ids for {rows} rows"


def test_fit_without_steps_on_one_process(tmp_path: Path) -> None:
    """model.fit(data.dataset, epochs=2) with callbacks and validation_data: no steps given, no hang."""
    (v,) = [r.value for r in run_ranks(BODY, "keras_io", 1, launcher="env", timeout=240, args=(str(tmp_path),))]
    assert v["epochs_run"] == 2 and v["cardinality"] == v["steps"] == 900 // 32 + 1
    assert len(v["history"]["val_loss"]) == 2
    _covers([v], 0, 900)
    _covers([v], 1, 900)
    assert v["batches"][0] != v["batches"][1], "epoch 1 is reshuffled"
    assert (tmp_path / "best.weights.h5").exists()


def test_two_workers_no_steps_one_backup_folder_chief_logs_and_resume(tmp_path: Path) -> None:
    """2 workers: fit without steps; worker 1 exits after epoch 0; the rerun resumes at epoch 1 with the same batches."""
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full_dir.mkdir()
    cut_dir.mkdir()
    full = run_ranks(BODY, "keras_io", 2, launcher="env", timeout=300, args=(str(full_dir), "2"))
    values = [r.value for r in full]
    assert [v["epochs_run"] for v in values] == [2, 2] and {v["cardinality"] for v in values} == {values[0]["steps"]}
    _covers(values, 0, 900)
    _covers(values, 1, 900)
    for w0, w1 in zip(values[0]["weights"], values[1]["weights"]):
        np.testing.assert_array_equal(w0, w1)
    assert [v["chief_writes"] for v in values] == [True, False]
    assert "Epoch 1/2" in full[0].stdout and "Epoch 1/2" not in full[1].stdout, "progress from the chief only"
    # a worker lost after epoch 0 (its backup written): the job fails ...
    lost = run_ranks(
        BODY,
        "keras_io",
        2,
        launcher="env",
        timeout=300,
        args=(str(cut_dir), "2", "0"),
        env={"DEEPRC_COMM_TIMEOUT": "20"},
        expect_failure=True,
    )
    assert any(r.returncode not in (0, None) for r in lost)
    assert (cut_dir / "backup" / "worker-0").is_dir() and (cut_dir / "backup" / "worker-1").is_dir()
    # ... and the rerun with the same folder resumes at epoch 1 with the batches of the uninterrupted run
    resumed = [r.value for r in run_ranks(BODY, "keras_io", 2, launcher="env", timeout=300, args=(str(cut_dir), "2"))]
    assert [v["epochs_run"] for v in resumed] == [1, 1], "only epoch 1 runs again"
    for v, ref in zip(resumed, values):
        assert v["batches"][1] == ref["batches"][1]
    for w0, w1 in zip(resumed[0]["weights"], values[0]["weights"]):
        np.testing.assert_allclose(w0, w1, rtol=1e-5, atol=1e-6)


def test_nan_feature_names_the_column() -> None:
    (v,) = [r.value for r in run_ranks(BODY, "nan_feature", 1, launcher="env", timeout=300)]
    assert "feature column 'f1' has 2 NaN/inf value(s)" in v, v
