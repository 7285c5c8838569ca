"""The Cylon adapter: its pure logic everywhere, and the real-Cylon tier where pycylon imports.

The tier runs every engine operation with ``engine="cylon"`` and ``engine="auto"`` on 2
ranks under mpirun against pyarrow on the gathered data: the engine suite's tables (null
keys, an empty partition, hot keys), a table of every type Cylon can carry, one of types
it cannot, all-empty tables, every aggregation; it checks from the log that Cylon really
ran where the adapter claims it does. `./dev test` runs it in the environment that
`./dev cylon` builds, with DEEPRC_REQUIRE_CYLON=1 so that a missing pycylon fails instead
of skipping.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deeprc_core.comm import LocalCommunicator
from deeprc_core.engine.cylon import normalise_cylon_join, rename_positionally
from deeprc_core.engine.cylon_types import from_carriers, to_carriers, unsupported_columns
from deeprc_core.engine.join import plan_join
from deeprc_core.engine.select import CYLON_AUTO_OPS, choose_engine, pycylon_available
from deeprc_core.exchange import table_from_bytes

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]
import ranks_cylon as cbody  # noqa: E402
from test_engine import _close, _expected_dedupe, _expected_groupby, _expected_join, _rows  # noqa: E402
from test_engine import check_all as check_engine_suite  # noqa: E402

from tests.support.ranks import mpirun_available, run_ranks  # noqa: E402

HERE = Path(__file__).resolve().parent
REQUIRED = os.environ.get("DEEPRC_REQUIRE_CYLON") == "1"
HAVE_CYLON = pycylon_available() and mpirun_available()
if REQUIRED and not HAVE_CYLON:
    raise RuntimeError("DEEPRC_REQUIRE_CYLON=1 but pycylon or mpirun is missing: run ./dev cylon and use its env")
needs_cylon = pytest.mark.skipif(not HAVE_CYLON, reason="needs pycylon (./dev cylon) and mpirun")


# ---------------------------------------------------------------- pure logic (every environment)
def test_join_output_normalised_to_pandas_names() -> None:
    left = pa.schema([("k", pa.int64()), ("v", pa.int64()), ("a", pa.string())])
    right = pa.schema([("k", pa.int64()), ("v", pa.int64()), ("b", pa.float64())])
    plan = plan_join(left, right, on="k", how="outer")
    # what Cylon returns: every left column then every right column, prefixed
    raw = pa.table(
        {"lt-k": [1, None], "lt-v": [10, None], "lt-a": ["x", None], "rt-k": [1, 2], "rt-v": [5, 6], "rt-b": [0.5, 1.5]}
    )
    out = normalise_cylon_join(raw, left.names, right.names, plan)
    assert out.column_names == ["k", "v_x", "a", "v_y", "b"]
    assert out.column("k").to_pylist() == [1, 2]  # outer join: key coalesced from the right side


def test_rename_positionally_checks_width() -> None:
    with pytest.raises(RuntimeError, match="expected 1"):
        rename_positionally(pa.table({"a": [1], "b": [2]}), ["x"])


def test_types_cylon_cannot_split_are_screened() -> None:
    carried = cbody.typed_part(1, 0, rows=5)
    assert unsupported_columns(carried.schema) == []
    awkward = cbody.awkward_part(1, 0)
    assert unsupported_columns(awkward.schema) == [
        "ls (large_string)",
        "h (halffloat)",
        "dec (decimal128(8, 2))",
        "lst (list<item: int64>)",
    ]
    assert unsupported_columns(pa.schema([("d", pa.dictionary(pa.int8(), pa.large_string()))])) != []


def test_carriers_round_trip_exactly() -> None:
    t = cbody.typed_part(2, 1, rows=30)
    carried = to_carriers(t)
    assert carried.schema.field("flag").type == pa.uint8() and carried.schema.field("dur").type == pa.int64()
    assert carried.schema.field("cat").type == pa.string()
    assert carried.column("k") is t.column("k") or carried.column("k").equals(t.column("k"))
    back = from_carriers(carried, t.schema)
    assert back.schema == t.schema and back.to_pylist() == t.to_pylist()


def test_engine_choice() -> None:
    comm = LocalCommunicator()
    assert choose_engine("arrow", comm, "join") == "arrow"
    assert choose_engine("auto", comm, "join") == "arrow"  # Cylon runs over MPI only
    with pytest.raises((ImportError, ValueError)):
        choose_engine("cylon", comm, "join")
    with pytest.raises(ValueError, match="engine must be"):
        choose_engine("spark", comm, "join")
    assert "shuffle" not in CYLON_AUTO_OPS  # placement must follow Deep RC's own hash


# ---------------------------------------------------------------- the real-Cylon tier
@pytest.mark.mpi
@needs_cylon
@pytest.mark.parametrize("engine", ["cylon", "auto"])
def test_engine_suite_on_cylon(engine: str) -> None:
    """The engine suite's tables (null keys, rank 1 empty, a hot key) through every operation."""
    results = run_ranks(HERE / "ranks_engine.py", "all_ops", 2, launcher="mpirun", timeout=300, args=("5", engine))
    check_engine_suite([r.value for r in results])


def _gathered(per_rank: list[dict], name: str) -> pa.Table:
    return pa.concat_tables([table_from_bytes(r[name]) for r in per_rank])


def _same(got: pa.Table, want: pa.Table, name: str) -> None:
    assert got.schema == want.select(got.column_names).schema, name
    assert sorted(got.column_names) == sorted(want.column_names), name
    assert _rows(got) == _rows(want, got.column_names), name


def _check_typed(per_rank: list[dict], kind: str) -> None:
    # one dictionary per column, so pyarrow 10's own join (the reference) accepts the gathered chunks
    left, right = _gathered(per_rank, "left").unify_dictionaries(), _gathered(per_rank, "right").unify_dictionaries()
    for name, kw in cbody.JOINS if kind == "typed" else cbody.JOINS[:1]:
        got = _gathered(per_rank, name)
        if kind == "awkward":  # pyarrow 10's own join (the reference) refuses list columns: compare the rest
            lists = [f.name for f in got.schema if pa.types.is_list(f.type)]
            assert lists == ["lst"], lists
            got, lhs = got.drop(lists), left.drop(lists)
            _same(got, _expected_join(lhs, right, kw["on"], kw["how"]), name)
            continue
        _same(got, _expected_join(left, right, kw["on"], kw["how"]), name)
    for name, kw in cbody.sorts(kind):
        by = [kw["by"]] if isinstance(kw["by"], str) else kw["by"]
        asc = kw.get("ascending", True)
        flags = [asc] * len(by) if isinstance(asc, bool) else asc
        keys = [(c, "ascending" if a else "descending") for c, a in zip(by, flags)]
        want = left.take(pc.sort_indices(left, sort_keys=keys))  # stable: the exact order is expected
        got = _gathered(per_rank, name)
        assert got.schema == want.schema and got.to_pylist() == want.to_pylist(), name
        sizes = [table_from_bytes(r[name]).num_rows for r in per_rank]
        assert max(sizes) < 0.8 * sum(sizes), (name, sizes)  # ties (the hot key) are split, not piled up
    if kind == "typed":
        for name, by in cbody.GROUPS:
            want = _expected_groupby(left, by, cbody.AGGS)
            got = _gathered(per_rank, name)
            assert got.schema == want.schema, (name, got.schema, want.schema)
            g, w = _rows(got), _rows(want)
            assert len(g) == len(w) and len({r[: len(by)] for r in g}) == len(g), name
            for gr, wr in zip(g, w):
                assert all(_close(a, b) for a, b in zip(gr, wr)), (name, gr, wr)
    for name, subset in cbody.DEDUPES if kind == "typed" else cbody.AWKWARD_DEDUPES:
        got, want = _gathered(per_rank, name), _expected_dedupe(left, subset)
        _same(got, want, name)
        for r in per_rank:  # each rank's kept rows are in global row order
            part = table_from_bytes(r[name])
            assert part.to_pylist() == [row for row in want.to_pylist() if row in part.to_pylist()], name
    for name, key in (("sh_str", "s"), ("sh_int", "k")):
        _same(_gathered(per_rank, name), left, name)
        owners: dict[object, set[int]] = {}
        for r, res in enumerate(per_rank):
            for v in table_from_bytes(res[name]).column(key).to_pylist():
                owners.setdefault(v, set()).add(r)
        assert all(len(v) == 1 for v in owners.values()), f"{name}: a key landed on several ranks"
    e_join, e_left = _gathered(per_rank, "e_join"), left.slice(0, 0)
    if kind == "awkward":  # as above: the reference join takes no list columns
        e_join, e_left = e_join.drop(["lst"]), e_left.drop(["lst"])
    _same(e_join, _expected_join(e_left, right, "k", "outer"), "e_join")
    assert _gathered(per_rank, "e_sort").schema == left.schema and _gathered(per_rank, "e_sort").num_rows == 0
    assert _gathered(per_rank, "e_dedupe").num_rows == 0


def _ran(per_rank: list[dict], what: str) -> bool:
    """Whether ``what`` ran on Cylon on every rank (from the engine's log)."""
    return all(f"{what}: ran on Cylon" in r["log"] for r in per_rank)


@pytest.mark.mpi
@needs_cylon
@pytest.mark.parametrize("engine", ["cylon", "auto"])
def test_typed_table_matches_arrow_and_runs_on_cylon(engine: str) -> None:
    """bool, string, float, time, binary, dictionary ... columns: identical results, and Cylon really ran."""
    results = run_ranks(HERE / "ranks_cylon.py", "typed_ops", 2, launcher="mpirun", timeout=300, args=("7", engine))
    per_rank = [r.value for r in results]
    _check_typed(per_rank, "typed")
    for op in ("join", "sort", "groupby", "drop_duplicates"):  # groupby: the bool/int and timestamp keys
        assert _ran(per_rank, op), (op, per_rank[0]["log"])
    assert _ran(per_rank, "shuffle") == (engine == "cylon")


@pytest.mark.mpi
@needs_cylon
@pytest.mark.parametrize("engine", ["cylon", "auto"])
def test_uncarriable_types_fall_back_with_a_reason(engine: str) -> None:
    """large_string, float16, decimal, list columns: the Arrow engine runs, and the log says why, once."""
    results = run_ranks(
        HERE / "ranks_cylon.py", "typed_ops", 2, launcher="mpirun", timeout=300, args=("8", engine, "awkward")
    )
    per_rank = [r.value for r in results]
    _check_typed(per_rank, "awkward")
    log = per_rank[0]["log"]
    for op in ("join", "sort", "drop_duplicates"):
        assert not _ran(per_rank, op)
        reasons = [line for line in log if line.startswith(f"{op}: using the arrow engine")]
        assert len(reasons) == 1 and "ls (large_string)" in reasons[0] and "dec (decimal128(8, 2))" in reasons[0]


@pytest.mark.mpi
@needs_cylon
def test_pycylon_failure_raises_on_every_rank() -> None:
    errors = [
        r.value for r in run_ranks(HERE / "ranks_cylon.py", "cylon_failure", 2, launcher="mpirun", args=("real",))
    ]
    assert all(e.startswith("CylonError: sort on Cylon failed on rank") for e in errors), errors
    assert all("engine='arrow'" in e for e in errors)
    errors = [
        r.value for r in run_ranks(HERE / "ranks_cylon.py", "cylon_failure", 2, launcher="mpirun", args=("rank1",))
    ]
    assert errors[1].startswith("CylonError") and "boom on rank 1" in errors[1]
    assert errors[0].startswith("RankFailedError") and "rank(s) [1]" in errors[0], errors


@pytest.mark.mpi
@needs_cylon
def test_to_and_from_cylon_share_buffers() -> None:
    for r in run_ranks(HERE / "ranks_cylon.py", "zero_copy", 2, launcher="mpirun", timeout=120):
        v = r.value
        assert v["type"] == "pycylon.frame.DataFrame" and v["rows"] > 0 and v["same"]
        assert v["mine"] == v["cylon"] == v["back"], "a copy was made between Deep RC and pycylon"
        assert v["errors"][0].startswith("TypeError") and "pycylon DataFrame or Table" in v["errors"][0]
        assert v["errors"][1].startswith("ValueError") and "CylonEnv is rank 0 of 3" in v["errors"][1]
