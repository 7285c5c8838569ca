"""Distributed engine operations against pyarrow and plain Python on the gathered data (1-4 ranks).

The references are computed with pyarrow's own single-process kernels (``Table.join``,
``Table.group_by``, ``sort_indices``) and plain Python, not pandas, so these tests run
unchanged on the oldest supported pyarrow (CI's ``.venv-compat``, pyarrow 10, has no pandas).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deeprc_core.exchange import table_from_bytes

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]
import ranks_engine as body  # noqa: E402

from tests.support.ranks import mpirun_available, run_ranks  # noqa: E402

BODY = Path(__file__).with_name("ranks_engine.py")
SEED = 3
#: pyarrow's hash aggregation names for ours (``std`` is Arrow's ``stddev`` with ddof=1).
ARROW_AGG = {"sum": "sum", "mean": "mean", "min": "min", "max": "max", "count": "count", "std": "stddev"}


def _gathered(per_rank: list[dict[str, bytes]], name: str) -> pa.Table:
    return pa.concat_tables([table_from_bytes(r[name]) for r in per_rank])


def _value(v: Any) -> Any:
    """A value that compares equal to itself (NaN as a marker) and sorts with anything (via repr)."""
    return "<NaN>" if isinstance(v, float) and math.isnan(v) else v


def _rows(table: pa.Table, columns: list[str] | None = None) -> list[tuple]:
    """The table's rows (in ``columns`` order) as a sorted multiset of tuples."""
    t = table.select(columns or table.column_names)
    rows = [tuple(_value(v) for v in r.values()) for r in t.to_pylist()]
    return sorted(rows, key=repr)


def _same_rows(got: pa.Table, want: pa.Table) -> None:
    assert sorted(got.column_names) == sorted(want.column_names)
    assert _rows(got) == _rows(want, got.column_names)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    return a == b


def _expected_join(left: pa.Table, right: pa.Table, on, how: str) -> pa.Table:
    kinds = {"inner": "inner", "left": "left outer", "right": "right outer", "outer": "full outer"}
    return left.join(right, keys=on, join_type=kinds[how], left_suffix="_x", right_suffix="_y", coalesce_keys=True)


def _expected_groupby(table: pa.Table, by: list[str], aggs: dict) -> pa.Table:
    """pyarrow's single-process group-by, in Deep RC's column names and order."""
    specs, names = [], []
    for c, fs in aggs.items():
        for f in [fs] if isinstance(fs, str) else fs:
            specs.append((c, "stddev", pc.VarianceOptions(ddof=1)) if f == "std" else (c, ARROW_AGG[f]))
            names.append(f"{c}_{f}")
    res = table.group_by(by).aggregate(specs)
    arrow_names = [f"{s[0]}_{s[1]}" for s in specs]
    return pa.table([*(res.column(k) for k in by), *(res.column(n) for n in arrow_names)], names=[*by, *names])


def _expected_dedupe(table: pa.Table, subset: list[str] | None) -> pa.Table:
    """The first row of every distinct ``subset`` value, in row order (nulls equal each other)."""
    cols = subset or table.column_names
    seen, keep = set(), []
    for i, row in enumerate(table.select(cols).to_pylist()):
        key = tuple(_value(v) for v in row.values())
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return table.take(pa.array(keep, pa.int64()))


def check_all(per_rank: list[dict[str, bytes]]) -> None:
    """Compare every operation's gathered result with the one-process computation."""
    p = len(per_rank)
    left, right = _gathered(per_rank, "left"), _gathered(per_rank, "right")
    for name, kw in body.JOINS:
        _same_rows(_gathered(per_rank, name), _expected_join(left, right, kw["on"], kw["how"]))
    # pandas merge naming (left columns, then right ones; shared names suffixed; both keys kept)
    got = _gathered(per_rank, "lr_inner")
    shared = set(left.column_names) & set(right.column_names)
    names = [c + "_x" if c in shared else c for c in left.column_names]
    names += [c + "_y" if c in shared else c for c in right.column_names]
    assert got.column_names == names
    want = left.join(
        right, keys="hot", right_keys="r", join_type="inner", left_suffix="_x", right_suffix="_y", coalesce_keys=False
    )
    _same_rows(got, want)
    for name, kw in body.SORTS:
        asc = kw.get("ascending", True)
        by = [kw["by"]] if isinstance(kw["by"], str) else kw["by"]
        flags = [asc] * len(by) if isinstance(asc, bool) else asc
        keys = [(c, "ascending" if a else "descending") for c, a in zip(by, flags)]  # nulls last by default
        want = left.take(pc.sort_indices(left, sort_keys=keys))  # stable: exact order expected
        got = _gathered(per_rank, name)
        assert got.equals(want), name
        if name == "sort_hot" and p > 1:  # a hot key is split across ranks, not piled on one
            sizes = [table_from_bytes(r[name]).num_rows for r in per_rank]
            assert max(sizes) < 0.8 * sum(sizes)
    for name, by, aggs in (
        ("groupby_str", ["k_str"], body.AGGS),
        ("groupby_multi", ["k_int", "k_b"], {"w": ["mean", "std"]}),
    ):
        want = _expected_groupby(left, by, aggs)
        got = _gathered(per_rank, name)
        assert got.column_names == want.column_names
        g, w = _rows(got), _rows(want)
        assert len(g) == len(w) and len({r[: len(by)] for r in g}) == len(g), name  # one row per group
        for gr, wr in zip(g, w):
            assert all(_close(a, b) for a, b in zip(gr, wr)), (name, gr, wr)
    for name, subset in (("dedupe", ["k_str", "k_b"]), ("dedupe_all", None)):
        _same_rows(_gathered(per_rank, name), _expected_dedupe(left, subset))
    for name, keys in (("shuffle_str", ["k_str"]), ("shuffle_multi", ["k_ts", "k_f"])):
        _same_rows(_gathered(per_rank, name), left)
        owners: dict[tuple, set[int]] = {}
        for r, res in enumerate(per_rank):
            for row in table_from_bytes(res[name]).select(keys).to_pylist():
                owners.setdefault(tuple(row.values()), set()).add(r)
        assert all(len(v) == 1 for v in owners.values()), "a key landed on several ranks"
    _same_rows(_gathered(per_rank, "concat"), pa.concat_tables([left, left]))
    ej = _gathered(per_rank, "empty_join")
    _same_rows(ej, _expected_join(left.slice(0, 0), right, "k_int", "outer"))
    assert _gathered(per_rank, "empty_sort").num_rows == 0
    eg = _gathered(per_rank, "empty_groupby")
    assert eg.num_rows == 0 and eg.column_names == ["k_str", *(f"v_{f}" for f in body.AGGS["v"]), "w_max"]


def test_all_ops_one_rank() -> None:
    check_all([body.all_ops(str(SEED))])


@pytest.mark.mpi
@pytest.mark.skipif(not mpirun_available(), reason="needs Open MPI's mpirun")
@pytest.mark.parametrize("n", [2, 3, 4])
def test_all_ops_mpirun(n: int) -> None:
    results = run_ranks(BODY, "all_ops", n, launcher="mpirun", timeout=180, args=(str(SEED + n),))
    check_all([r.value for r in results])


def test_all_ops_tcp_three_ranks() -> None:
    results = run_ranks(BODY, "all_ops", 3, launcher="env", timeout=180, env={"DEEPRC_COMM": "tcp"}, args=("11",))
    check_all([r.value for r in results])


@pytest.mark.mpi
@pytest.mark.skipif(not mpirun_available(), reason="needs Open MPI's mpirun")
def test_missing_key_column_fails_on_every_rank() -> None:
    results = run_ranks(BODY, "missing_key", 3, launcher="mpirun", timeout=60)
    errors = [r.value for r in results]
    assert errors[1].startswith("SchemaError") and "k_int" in errors[1]
    assert all(e.startswith("RankFailedError") and "rank(s) [1]" in e for e in (errors[0], errors[2]))
