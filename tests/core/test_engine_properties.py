"""Property tests: join and sort against plain-Python references, in one process and on a simulated P-way split.

The references are written out in Python (nested-loop join, ``sorted``), so the tests need
neither pandas nor a recent pyarrow and run in CI's pyarrow-10 environment too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("hypothesis")
from deeprc_core.comm import LocalCommunicator  # noqa: E402
from deeprc_core.engine.hashing import hash_rows, partition_of  # noqa: E402
from deeprc_core.engine.join import local_join, plan_join  # noqa: E402
from deeprc_core.table import GlobalTable  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

keys = st.one_of(st.none(), st.integers(-5, 5))
rows = st.lists(st.tuples(keys, st.integers(-100, 100)), max_size=30)


def _canon(table: pa.Table) -> list[tuple]:
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=repr)


def reference_join(lrows: list[tuple[Any, int]], rrows: list[tuple[Any, int]], how: str) -> list[tuple]:
    """Rows ``(k, v, w)`` of the join on ``k``; null keys never match (Arrow's rule), the key is coalesced."""
    out = [(lk, v, w) for lk, v in lrows for rk, w in rrows if lk is not None and lk == rk]
    if how in ("left", "outer"):
        out += [(lk, v, None) for lk, v in lrows if lk is None or all(lk != rk for rk, _ in rrows)]
    if how in ("right", "outer"):
        out += [(rk, None, w) for rk, w in rrows if rk is None or all(rk != lk for lk, _ in lrows)]
    return sorted(out, key=repr)


@settings(max_examples=40, deadline=None)
@given(rows, rows, st.sampled_from(["inner", "left", "right", "outer"]), st.integers(1, 4))
def test_join_matches_reference(lrows: list, rrows: list, how: str, parts: int) -> None:
    left = pa.table(
        {"k": pa.array([r[0] for r in lrows], pa.int64()), "v": pa.array([r[1] for r in lrows], pa.int64())}
    )
    right = pa.table(
        {"k": pa.array([r[0] for r in rrows], pa.int64()), "w": pa.array([r[1] for r in rrows], pa.int64())}
    )
    plan = plan_join(left.schema, right.schema, on="k", how=how)
    # simulate a P-way hash partitioning: joining bucket by bucket must give the whole join
    ld, rd = partition_of(hash_rows(left, ["k"]), parts), partition_of(hash_rows(right, ["k"]), parts)
    got = pa.concat_tables(
        [local_join(left.filter(pa.array(ld == b)), right.filter(pa.array(rd == b)), plan) for b in range(parts)]
    )
    assert got.column_names == ["k", "v", "w"]
    assert _canon(got) == reference_join(lrows, rrows, how)


def _sort_key(row: tuple[Any, int], ascending: bool) -> tuple:
    """Sort key of ``(k, v)``: k in the given direction with nulls last, then v ascending."""
    k, v = row
    return (k is None, 0 if k is None else (k if ascending else -k), v)


@settings(max_examples=40, deadline=None)
@given(rows, st.booleans())
def test_sort_matches_reference(data: list, ascending: bool) -> None:
    t = pa.table({"k": pa.array([r[0] for r in data], pa.int64()), "v": pa.array([r[1] for r in data], pa.int64())})
    got = GlobalTable(t, LocalCommunicator()).sort(["k", "v"], ascending=[ascending, True]).local
    want = sorted(data, key=lambda r: _sort_key(r, ascending))  # Python's sort is stable
    assert [tuple(r.values()) for r in got.to_pylist()] == [tuple(r) for r in want]


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
def test_bucketed_local_join_matches_reference(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large local joins run bucket by bucket (to bound Acero's memory); the union must be the join."""
    from deeprc_core.engine import join as join_mod

    monkeypatch.setattr(join_mod, "BUCKET_ROWS", 16)  # 300 rows -> 19 buckets
    rng = __import__("random").Random(7)
    lrows = [(rng.choice([None, *range(40)]), i) for i in range(300)]
    rrows = [(rng.choice([None, *range(40)]), -i) for i in range(250)]
    left = pa.table(
        {"k": pa.array([r[0] for r in lrows], pa.int64()), "v": pa.array([r[1] for r in lrows], pa.int64())}
    )
    right = pa.table(
        {"k": pa.array([r[0] for r in rrows], pa.int64()), "w": pa.array([r[1] for r in rrows], pa.int64())}
    )
    plan = plan_join(left.schema, right.schema, on="k", how=how)
    assert join_mod.num_buckets(300) > 1
    assert _canon(local_join(left, right, plan)) == reference_join(lrows, rrows, how)
    # payloads Acero cannot carry go through row numbers, which must survive the bucket reordering
    nested = right.append_column("n", pa.array([[w] for _, w in rrows], pa.list_(pa.int64())))
    got = local_join(left, nested, plan_join(left.schema, nested.schema, on="k", how=how))
    assert all(n is None or n == [w] for n, w in zip(got.column("n").to_pylist(), got.column("w").to_pylist()))
    assert _canon(got.select(["k", "v", "w"])) == reference_join(lrows, rrows, how)


dense_rows = st.lists(st.tuples(st.integers(-5, 5), st.integers(-100, 100)), max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    dense_rows, dense_rows, st.sampled_from(["inner", "left", "right"]), st.sampled_from(["int64", "int8", "uint32"])
)
def test_dense_key_join_matches_reference(lrows: list, rrows: list, how: str, key_type: str) -> None:
    """The direct-addressing join (one integer key, no nulls) gives exactly the reference join."""
    from deeprc_core.engine import dense_join

    kt = pa.int64() if key_type == "int64" else pa.int8() if key_type == "int8" else pa.uint32()
    lrows = [(k if kt != pa.uint32() else abs(k), v) for k, v in lrows]
    rrows = [(k if kt != pa.uint32() else abs(k), v) for k, v in rrows]
    left = pa.table({"k": pa.array([r[0] for r in lrows], kt), "v": pa.array([r[1] for r in lrows], pa.int64())})
    right = pa.table({"k": pa.array([r[0] for r in rrows], kt), "w": pa.array([r[1] for r in rrows], pa.int64())})
    plan = plan_join(left.schema, right.schema, on="k", how=how)
    old = dense_join.MIN_ROWS, dense_join.PROBE_ROWS, dense_join.MAX_SPAN_PER_ROW
    # tiny tables take the dense path (a span of up to 11 keys even for one build row), probed 4 rows at a time
    dense_join.MIN_ROWS, dense_join.PROBE_ROWS, dense_join.MAX_SPAN_PER_ROW = 0, 4, 11
    try:
        found = dense_join.dense_join_indices(left.column("k"), right.column("k"), how == "left")
        got = local_join(left, right, plan)
    finally:
        dense_join.MIN_ROWS, dense_join.PROBE_ROWS, dense_join.MAX_SPAN_PER_ROW = old
    if lrows and rrows:
        assert found is not None  # the span of -5..5 is dense: the direct-addressing path ran
    assert got.column_names == ["k", "v", "w"] and got.schema.field("k").type == kt
    assert _canon(got) == reference_join(lrows, rrows, how)


def test_dense_join_declines_what_it_cannot_do() -> None:
    from deeprc_core.engine.dense_join import dense_join_indices

    n = 10_000
    ints = pa.chunked_array([pa.array(np.arange(n))])
    assert dense_join_indices(ints, ints, False) is not None
    sparse = pa.chunked_array([pa.array(np.arange(n) * 1000)])
    assert dense_join_indices(ints, sparse, False) is None  # range 1000x the rows: a hash join's job
    with_null = pa.chunked_array([pa.array([None, *range(n)])])
    assert dense_join_indices(ints, with_null, False) is None
    floats = pa.chunked_array([pa.array(np.arange(n, dtype=np.float64))])
    assert dense_join_indices(floats, floats, False) is None
    big = pa.chunked_array([pa.array(np.array([2**63 + 5] * n, dtype=np.uint64))])
    assert dense_join_indices(big, big, False) is None


def test_dense_join_keeps_small_keys_beside_uint64_keys_beyond_int64() -> None:
    """A probe slice holding a uint64 key above int64's range still matches its other keys."""
    n = 10_000
    build = pa.table({"k": pa.array(np.arange(n, dtype=np.uint64)), "w": pa.array(np.arange(n))})
    keys = np.arange(n, dtype=np.uint64)
    keys[::7] = np.uint64(2**63 + 5)  # never matches: every build key is below n
    probe = pa.table({"k": pa.array(keys), "v": pa.array(np.arange(n))})
    for how in ("inner", "left"):
        got = local_join(probe, build, plan_join(probe.schema, build.schema, on="k", how=how))
        matched = int((keys < n).sum())
        assert got.num_rows == (matched if how == "inner" else n)
        assert got.num_rows - got.column("w").null_count == matched  # matched rows carry a build row
