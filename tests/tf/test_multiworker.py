"""Keras 3 ``model.fit`` under MultiWorkerMirroredStrategy on 2 real CPU workers (RING).

Each launch costs ~15-25 s here, so each one checks several things: the strategy and
TF_CONFIG, the #20585 workaround (fit runs at all), identical weights on both workers,
full coverage of the training windows with uneven partitions, agreed step counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.ranks import REPO, mpirun_available, run_ranks

HERE = Path(__file__).resolve().parent
BODY = HERE / "ranks_fit.py"

pytestmark = [pytest.mark.tensorflow, pytest.mark.slow]


def _expected_windows(world: int = 2) -> np.ndarray:
    """Global first rows of every valid window (30 in, same basin, target present) of basins 0..3 in order."""
    import camels
    import ranks_fit

    table = camels.read_basins([i for r in range(world) for i in ranks_fit.basins_of(r, world)])
    basin = table["basin"].to_numpy()
    target = table[camels.TARGET].to_numpy()
    w = ranks_fit.WINDOW
    starts = np.arange(len(basin) - w + 1)
    ok = (basin[starts] == basin[starts + w - 1]) & ~np.isnan(target[starts + w - 1])
    return starts[ok]


def _check_fit(values: list[dict[str, Any]], even: str) -> None:
    n = len(values)
    assert [v["strategy"] for v in values] == ["CollectiveAllReduceStrategy"] * n
    assert [v["replicas"] for v in values] == [n] * n
    configs = [json.loads(v["tf_config"]) for v in values]
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)
    assert [c["task"]["index"] for c in configs] == list(range(n))
    # Agreed steps, and every worker ran the whole plan of epoch 0 in order.
    steps = {v["steps"] for v in values}
    assert len(steps) == 1
    for v in values:
        assert v["numbers"] == list(range(v["steps"]))
    # Identical weights on every worker, and they moved.
    for other in values[1:]:
        for a, b in zip(values[0]["weights"], other["weights"]):
            np.testing.assert_array_equal(a, b)
        assert values[0]["history"] == other["history"]
    assert any(not np.array_equal(a, b) for a, b in zip(values[0]["weights"], values[0]["before"]))
    assert np.isfinite(values[0]["history"]["loss"][0])
    # Coverage: every valid window exactly once across workers (padding aside).
    real = np.concatenate([v["index"][~v["padded"]] for v in values])
    expected = _expected_windows(n)
    assert len(real) == len(np.unique(real)), "a window was trained twice in one epoch"
    np.testing.assert_array_equal(np.sort(real), expected)
    # Keras's own count of the samples trained on agrees (the metric sums over all replicas).
    served = sum(len(v["index"]) for v in values)
    assert values[0]["history"]["samples"][0] == served
    if even == "pad":
        assert served == n * max(len(v["index"]) for v in values)


def test_fit_two_workers_env_uneven_pad() -> None:
    """torchrun-style env wiring, 3 basins vs 1, even='pad'."""
    res = run_ranks(BODY, "fit_camels", 2, launcher="env", timeout=240, args=("pad",))
    _check_fit([r.value for r in res], "pad")


@pytest.mark.mpi
@pytest.mark.skipif(not mpirun_available(), reason="mpirun is not installed")
def test_fit_two_workers_mpirun_rebalance() -> None:
    """mpirun -np 2 (the MPI communicator agrees the ports), 3 basins vs 1, even='rebalance'."""
    res = run_ranks(BODY, "fit_camels", 2, launcher="mpirun", timeout=300, args=("rebalance",))
    _check_fit([r.value for r in res], "rebalance")


@pytest.mark.parametrize("output", ["flat", "column"])
def test_one_step_equals_the_single_process_gradient(output: str) -> None:
    """The step 2 workers take is the one a single process takes on all the rows (not replicas x it).

    "flat" (model output (B,), targets (B,)) makes Keras's per-replica loss a scalar, which
    Keras 3 leaves unscaled for distribution: without the workaround the step and the
    reported loss are exactly 2x.
    """
    import ranks_fit

    res = run_ranks(BODY, "one_step", 2, launcher="env", timeout=240, args=(output,))
    data = [ranks_fit.step_data(r) for r in (0, 1)]
    x = np.concatenate([np.stack([d["a"], d["b"]], axis=1) for d in data]).astype(np.float64)
    y = np.concatenate([d["y"] for d in data]).astype(np.float64)
    lr, n = 0.1, len(y)  # MSE at zero weights: gradient -2/n * sum(y x), loss mean(y^2)
    for r in res:
        v = r.value
        assert v["steps"] == 1
        np.testing.assert_allclose(v["kernel"].ravel(), lr * 2 / n * (y @ x), rtol=1e-4)
        np.testing.assert_allclose(v["bias"], [lr * 2 / n * y.sum()], rtol=1e-4)
        np.testing.assert_allclose(v["loss"], np.mean(y**2), rtol=1e-4)
        # deeprc_tf.predict: each global row once, in order, the trained model's output
        np.testing.assert_array_equal(v["pred_index"], np.arange(n))
        np.testing.assert_allclose(v["pred"].ravel(), x @ v["kernel"].ravel() + v["bias"][0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(v["pred_true"].ravel(), y, rtol=1e-6)
    # predict(model, data): the same rows and outputs, on rank 0 only
    assert res[1].value["data_pred"] is None
    np.testing.assert_array_equal(res[0].value["data_index"], np.arange(n))
    np.testing.assert_allclose(res[0].value["data_pred"], res[0].value["pred"], rtol=1e-6)


def test_failing_worker_fails_every_worker_in_bounded_time() -> None:
    """Rank 1 raises at batch 3: rank 0 must exit non-zero by itself (heartbeats / collective timeout)."""
    timeout = 10
    t0 = time.monotonic()
    res = run_ranks(
        BODY,
        "fit_camels",
        2,
        launcher="env",
        timeout=200,
        args=("pad", "1"),
        env={"DEEPRC_COMM_TIMEOUT": str(timeout)},
        expect_failure=True,
    )
    elapsed = time.monotonic() - t0
    assert res[1].returncode == 1 and "fails on purpose" in res[1].stderr
    assert res[0].returncode == 1, f"rank 0 did not fail by itself (exit {res[0].returncode})"
    assert "unhealthy" in res[0].stderr or "timed out" in res[0].stderr.lower(), res[0].stderr[-2000:]
    assert elapsed < 170  # ~2-3 timeouts plus start-up, with headroom for a loaded machine


def test_strategy_after_tf_started_raises_clearly() -> None:
    """A TF op before deeprc_tf.strategy() gives our error, not TF's 'configured at program startup'."""
    code = (
        "import tensorflow as tf, deeprc_tf\n"
        "tf.constant(1.0)\n"
        "try:\n"
        "    deeprc_tf.strategy()\n"
        "except deeprc_tf.TFAlreadyStartedError as e:\n"
        "    print('CLEAR:', e)\n"
    )
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "RANK": "0",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
        "PYTHONPATH": str(REPO),
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "CLEAR:" in out.stdout, out.stderr[-2000:]
    assert "before TensorFlow runs any op" in out.stdout
