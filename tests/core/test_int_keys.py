"""The integer-key fast paths (engine/int_keys.py) give exactly what Arrow's general paths give."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deeprc_core.engine import int_keys

SPECS = [
    ("v", "sum"),
    ("i", "sum"),
    ("i", "min"),
    ("i", "max"),
    ("i", "count"),
    ("v", "count"),
]


def _same(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    assert isinstance(a, (int, float)) and isinstance(b, (int, float))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == pytest.approx(b, rel=1e-5)


@pytest.mark.parametrize("seed", range(40))
def test_dense_aggregation_and_packed_sort_match_arrow(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    keys = rng.integers(-5 if seed % 2 else 0, int(rng.integers(1, 60)), n)
    key_type = [pa.int8(), pa.int64(), pa.int32()][seed % 3] if seed % 2 else pa.uint16()
    v = rng.normal(size=n).astype(np.float32)
    v[rng.random(n) < 0.1] = np.nan  # NaN: carried by a sum
    table = pa.table(
        {
            "k": pa.array(keys, key_type),
            "v": pa.array(v, mask=rng.random(n) < 0.2),
            "i": pa.array(rng.integers(-100, 100, n), pa.int16(), mask=rng.random(n) < 0.3),
        }
    )
    got = int_keys.aggregate(table, ["k"], SPECS)
    want = table.group_by("k").aggregate(SPECS).sort_by("k")
    assert got is not None and got.schema == want.schema
    for name in want.column_names:
        pairs = zip(got.column(name).to_pylist(), want.column(name).to_pylist())
        assert all(_same(a, b) for a, b in pairs), name
    for order in ("ascending", "descending"):
        fast = int_keys.sort_indices(table, [("k", order)])
        assert fast is not None
        assert fast.tolist() == pc.sort_indices(table, sort_keys=[("k", order)]).to_pylist()  # stable, like Arrow


def test_fast_paths_decline_what_they_cannot_do() -> None:
    wide = pa.table({"k": pa.array([0, 1 << 60], pa.int64()), "v": [1, 2]})
    assert int_keys.aggregate(wide, ["k"], [("v", "sum")]) is None  # key range far beyond the rows
    nulls = pa.table({"k": pa.array([1, None]), "v": [1, 2]})
    assert (
        int_keys.aggregate(nulls, ["k"], [("v", "sum")]) is None
        and int_keys.sort_indices(nulls, [("k", "ascending")]) is None
    )
    text = pa.table({"k": ["a", "b"], "v": [1, 2]})
    assert int_keys.aggregate(text, ["k"], [("v", "sum")]) is None
    assert int_keys.aggregate(pa.table({"k": [1, 2], "v": [1, 2]}), ["k"], [("v", "mean")]) is None
    assert int_keys.aggregate(pa.table({"k": [1, 2], "v": [1.0, 2.0]}), ["k"], [("v", "min")]) is None
    assert int_keys.sort_indices(pa.table({"k": [3, 1], "j": [1, 2]}), [("k", "ascending"), ("j", "ascending")]) is None
    assert int_keys.sort_indices(wide, [("k", "ascending")]) is not None  # 61 bits of key + 1 of row fit


def test_packed_sort_declines_a_range_that_would_wrap() -> None:
    full = np.iinfo(np.int64)
    extreme = pa.table({"k": pa.array([full.max, full.min, 0], pa.int64())})
    assert int_keys.sort_indices(extreme, [("k", "ascending")]) is None  # max - min needs 64 bits
    near = pa.table({"k": pa.array([1 << 61, -(1 << 60), 5, -(1 << 60)], pa.int64())})
    for order in ("ascending", "descending"):  # 62 bits of range + 2 of row number: declined too
        assert int_keys.sort_indices(near, [("k", order)]) is None
    fits = pa.table({"k": pa.array([1 << 59, -(1 << 59), 5, -(1 << 59)], pa.int64())})  # 61 + 2 bits
    for order in ("ascending", "descending"):
        got = int_keys.sort_indices(fits, [("k", order)])
        assert got is not None and got.tolist() == pc.sort_indices(fits, sort_keys=[("k", order)]).to_pylist()
