"""Rank bodies for tests/pipelines/test_prep.py (run on every rank by tests.support.runner)."""

from __future__ import annotations

from typing import Any

from examples.pipelines.camels_data import CamelsConfig, prepare_camels
from examples.pipelines.ett_data import EttConfig, prepare_ett


def ett_and_camels() -> dict[str, Any]:
    """Prepare both datasets on this rank; report global and local sizes and the statistics."""
    ett = prepare_ett(EttConfig())
    camels = prepare_camels(CamelsConfig(seq_len=30))
    return {
        "ett_stats": ett.stats,
        "ett_rows": [ett.train.num_rows, ett.val.num_rows, ett.test.num_rows],
        "ett_local": [ett.train.local_num_rows, ett.val.local_num_rows, ett.test.local_num_rows],
        "camels_joined": camels.joined_rows,
        "camels_local": [camels.train.local_num_rows, camels.test.local_num_rows],
    }
