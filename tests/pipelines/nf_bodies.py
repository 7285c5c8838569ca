"""Rank bodies for tests/pipelines/test_neuralforecast.py (run on every rank by tests.support.runner)."""

from __future__ import annotations

from typing import Any

import deeprc_core as drc
from examples.pipelines import nf_data
from examples.pipelines.ett_data import EttConfig


def long_format() -> dict[str, Any]:
    """Prepare the long-format ETTh1 on this rank; report its series, rows, values and copies."""
    with drc.counting_copies() as copies:
        data = nf_data.prepare(EttConfig())
    ids = data.table.local.column("unique_id").to_pylist()
    ds = data.table.local.column("ds").to_pylist()
    return {
        "series": data.series,
        "indptr": data.indptr.tolist(),
        "ids_in_order": [ids[i] for i in data.indptr[:-1]],
        "time_ordered": all(
            ds[i] < ds[i + 1] for s, e in zip(data.indptr[:-1], data.indptr[1:]) for i in range(s, e - 1)
        ),
        "first_values": {name: float(data.y(name)[0]) for name in data.series},
        "last_values": {name: float(data.y(name)[-1]) for name in data.series},
        "copies": dict(copies.count),
    }
