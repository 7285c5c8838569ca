"""Exactly-once distributed prediction (deeprc_core.prediction) on real ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.core.conftest import launch_env, launcher_params
from tests.support.ranks import run_ranks

BODIES = Path(__file__).with_name("ranks_data.py")


@pytest.mark.parametrize(("launcher", "n"), launcher_params([("mpirun", 3), ("env", 2)]))
@pytest.mark.parametrize("root", ["0", "all"])
def test_every_sample_predicted_once_in_global_order(launcher: str, n: int, root: str) -> None:
    sizes = [7, 2, 5][:n]
    total = sum(sizes)
    res = [
        r.value
        for r in run_ranks(
            BODIES,
            "predict_exactly_once",
            n,
            launcher=launcher,
            env=launch_env(launcher),
            args=(",".join(map(str, sizes)), root),
            timeout=120,
        )
    ]
    assert len({r["batches"] for r in res}) == 1  # padded: every rank ran the same number of batches
    holders = [r for r in res if "index" in r]
    assert len(holders) == (1 if root == "0" else n)
    for got in holders:
        np.testing.assert_array_equal(got["index"], np.arange(total))  # each global row once, in order
        np.testing.assert_array_equal(got["pred"], 2 * np.arange(total, dtype=np.float32))
        np.testing.assert_array_equal(got["true"], np.arange(total, dtype=np.float32) + 100)
        # windows of 3 inputs + 1 target cross partition boundaries (halo): every start 0 .. total - 4, once;
        # rank 1's 2 rows hold no window, so the plan rebalanced the rows first
        np.testing.assert_array_equal(got["win_index"], np.arange(total - 3))
        np.testing.assert_array_equal(got["win"].ravel(), 3 * np.arange(total - 3, dtype=np.float32) + 3)
    assert all("distinct samples arrived, the plan has" in r["dropped"] for r in res), [r["dropped"] for r in res]
