"""GlobalTable on one process: properties, constructors, select/filter/with_column, split, statistics."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import deeprc_core as d
from deeprc_core import GlobalTable, LocalCommunicator, SchemaError
from tests.core.conftest import EchoComm


@pytest.fixture
def table() -> GlobalTable:
    rng = np.random.default_rng(0)
    return GlobalTable.from_arrow(
        pa.table({"i": np.arange(100), "x": rng.normal(size=100), "s": [f"r{k}" for k in range(100)]}),
        LocalCommunicator(),
    )


def test_properties(table: GlobalTable) -> None:
    assert (table.rank, table.world_size, table.local_num_rows, table.num_rows) == (0, 1, 100, 100)
    assert table.row_counts == (100,) and table.row_offset == 0 and len(table) == 100
    assert table.schema.names == ["i", "x", "s"] and "rank 0 of 1" in repr(table)


def test_row_counts_are_one_cached_collective() -> None:
    class Counting(EchoComm):
        calls = 0

        def allgather(self, obj: Any) -> list[Any]:
            Counting.calls += 1
            return super().allgather(obj)

    g = GlobalTable(pa.table({"a": [1, 2, 3]}), Counting(0, 1))
    before = Counting.calls
    assert g.row_counts == (3,) and g.num_rows == 3 and g.row_offset == 0
    assert Counting.calls - before == 1


def test_constructors() -> None:
    comm = LocalCommunicator()
    pd = pytest.importorskip("pandas")  # not in the pyarrow-10 compatibility environment
    a = GlobalTable.from_pandas(pd.DataFrame({"a": [1.0, 2.0]}), comm)
    b = GlobalTable.from_pydict({"a": [1.0, 2.0]}, comm)
    c = GlobalTable.from_arrow(pa.RecordBatch.from_pydict({"a": [1.0, 2.0]}), comm)
    assert a.local.equals(b.local) and b.local.equals(c.local)
    with pytest.raises(TypeError, match="pyarrow.Table"):
        GlobalTable({"a": [1]}, comm)  # type: ignore[arg-type]


def test_cylon_without_pycylon_names_how_to_get_it(table: GlobalTable, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycylon", None)  # import pycylon -> ImportError
    with pytest.raises(ImportError, match="conda install -c cylondata pycylon"):
        table.to_cylon(object())
    with pytest.raises(ImportError, match="pycylon"):
        GlobalTable.from_cylon(object(), object())


def test_select_filter_with_column(table: GlobalTable) -> None:
    sel = table.select(["x", "i"])
    assert sel.column_names == ["x", "i"]
    with pytest.raises(SchemaError, match=r"no column\(s\) \['nope'\]"):
        table.select(["i", "nope"])
    f = table.filter(pc.field("i") >= 90)  # an Expression (pyarrow 10 too)
    assert f.local.column("i").to_pylist() == list(range(90, 100)) and f.row_counts == (10,)
    m = table.filter(pc.less(table.local.column("i"), 3))
    assert m.local_num_rows == 3
    w = table.with_column("i2", pc.field("i") * 2)
    assert w.local.column("i2").to_pylist() == [2 * k for k in range(100)]
    w = w.with_column("i2", lambda t: pc.add(t.column("i"), 1))  # replace, keeps position
    assert w.column_names == ["i", "x", "s", "i2"] and w.local.column("i2")[0].as_py() == 1
    assert table.with_column("z", np.zeros(100)).local.column("z").type == pa.float64()
    with pytest.raises(ValueError, match="3 values for 100 rows"):
        table.with_column("bad", [1, 2, 3])


def test_split_ordered_fractions_and_boundaries(table: GlobalTable) -> None:
    parts = table.split([0.7, 0.1, 0.2])
    assert [p.num_rows for p in parts] == [70, 10, 20]
    assert parts[1].local.column("i").to_pylist() == list(range(70, 80))
    parts = table.split(boundaries=[50, 75, 90])
    assert [p.local.column("i")[0].as_py() for p in parts] == [0, 50, 75] and parts[2].num_rows == 15
    lapped = table.split(boundaries=[50, 75, 100], overlap=10)
    assert [(p.local.column("i")[0].as_py(), p.num_rows) for p in lapped] == [(0, 50), (40, 35), (65, 35)]
    for bad in ({"fractions": [0.8, 0.3]}, {"boundaries": [50, 20]}, {"boundaries": [101]}, {}):
        with pytest.raises(ValueError):
            table.split(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ordered=True"):
        table.split([0.5, 0.5], ordered=False, overlap=3)


def test_split_random_is_seeded_and_a_partition(table: GlobalTable) -> None:
    a = table.split([0.6, 0.4], ordered=False, seed=3)
    b = table.split([0.6, 0.4], ordered=False, seed=3)
    c = table.split([0.6, 0.4], ordered=False, seed=4)
    ids = [p.local.column("i").to_pylist() for p in a]
    assert ids == [p.local.column("i").to_pylist() for p in b] != [p.local.column("i").to_pylist() for p in c]
    assert sorted(ids[0] + ids[1]) == list(range(100)) and len(ids[0]) == 60
    assert ids[0] == sorted(ids[0])  # relative order kept


def test_global_statistics_match_numpy(table: GlobalTable) -> None:
    x = table.local.column("x").to_numpy()
    ((mean, std),) = table.global_mean_std(["x"]).values()
    assert mean == pytest.approx(x.mean()) and std == pytest.approx(x.std())
    assert table.global_mean_std(["x"], ddof=1)["x"][1] == pytest.approx(x.std(ddof=1))
    assert table.global_min_max(["x", "i"]) == {"x": (x.min(), x.max()), "i": (0, 99)}
    with pytest.raises(SchemaError, match="'s' is string, not numeric"):
        table.global_mean_std(["s"])
    with pytest.raises(SchemaError, match="nope"):
        table.global_min_max(["nope"])


def test_statistics_skip_nulls_and_nans_and_handle_chunks() -> None:
    t = pa.concat_tables([pa.table({"v": pa.array([1.0, None, np.nan])}), pa.table({"v": pa.array([3.0])})])
    g = GlobalTable(t, LocalCommunicator())
    assert g.global_mean_std(["v"])["v"] == (2.0, 1.0)
    assert g.global_min_max(["v"])["v"] == (1.0, 3.0)


def test_zero_rows_give_nan_statistics_not_errors() -> None:
    g = GlobalTable(pa.table({"v": pa.array([], type=pa.float64())}), LocalCommunicator())
    assert all(np.isnan(g.global_mean_std(["v"])["v"]))
    assert all(np.isnan(g.global_min_max(["v"])["v"]))
    assert g.split([0.5, 0.5])[0].num_rows == 0
    assert g.global_shuffle(1, 2).num_rows == 0


def test_global_shuffle_on_one_rank_is_a_seeded_permutation(table: GlobalTable) -> None:
    with d.counting_copies() as copies:
        a = table.global_shuffle(seed=1, epoch=0).local.column("i").to_numpy()
    b = table.global_shuffle(seed=1, epoch=0).local.column("i").to_numpy()
    c = table.global_shuffle(seed=1, epoch=1).local.column("i").to_numpy()
    assert (a == b).all() and not (a == c).all() and sorted(a) == list(range(100))
    assert (a == np.random.default_rng([1, 0]).permutation(100)).all()
    assert copies.count.get("shuffle") == 1


def test_gather_and_head_on_one_rank(table: GlobalTable) -> None:
    assert table.gather().equals(table.local)
    assert table.head(3).column("i").to_pylist() == [0, 1, 2]


# ---------------------------------------------------------- real processes
from pathlib import Path  # noqa: E402

from tests.core.conftest import launch_env, launcher_params  # noqa: E402
from tests.support.ranks import run_ranks  # noqa: E402

BODIES = Path(__file__).with_name("ranks_data.py")


@pytest.fixture(scope="module")
def one_rank_ops(etth1: Path) -> dict[str, Any]:
    from tests.core import ranks_data

    d.set_default_communicator(LocalCommunicator())
    try:
        return ranks_data.table_ops(str(etth1))
    finally:
        d.set_default_communicator(None)


@pytest.mark.parametrize(("launcher", "n"), launcher_params([("mpirun", 2), ("mpirun", 3), ("env", 3)]))
def test_table_ops_on_real_ranks(one_rank_ops: dict[str, Any], etth1: Path, launcher: str, n: int) -> None:
    res = [
        r.value
        for r in run_ranks(
            BODIES, "table_ops", n, launcher=launcher, env=launch_env(launcher), args=(str(etth1),), timeout=150
        )
    ]
    ref = one_rank_ops
    # Informer split: 8640 / 2880+96 / 2880+96 rows, the same global rows as on one process
    assert [c for c, _ in res[0]["informer"]] == [8640, 2976, 2976] == [c for c, _ in ref["informer"]]
    for k in range(3):
        assert (np.concatenate([v["informer"][k][1] for v in res]) == ref["informer"][k][1]).all()
    assert ref["informer"][1][1][0] == 8640 - 96
    # random split: the same global rows per part whatever the number of ranks
    for k in range(3):
        assert (np.sort(np.concatenate([v["random"][k] for v in res])) == np.sort(ref["random"][k])).all()
    # global shuffle: one global order for (seed, epoch), independent of the number of ranks
    assert (np.concatenate([v["shuffled"] for v in res]) == ref["shuffled"]).all()
    assert res[0]["shuffle_counts"] == tuple(17420 * (r + 1) // n - 17420 * r // n for r in range(n))
    # uneven partitions with an empty one
    sizes = [0 if r == 1 else 7 * (r + 1) for r in range(n)]
    total = sum(sizes)
    vals = np.arange(total, dtype=np.float64)
    for r, v in enumerate(res):
        counts, num, offset, ms, mm = v["uneven"]
        assert counts == tuple(sizes) and num == total and offset == sum(sizes[:r])
        assert ms["v"] == pytest.approx((vals.mean(), vals.std())) and mm["v"] == (0.0, total - 1.0)
        assert v["schema_error"] and "different schemas" in v["schema_error"]
        assert "do not exist" in v["missing_file"] and "nope" in v["missing_column"]
    assert res[0]["uneven_head"].column("v").to_pylist() == [0.0, 1.0, 2.0] and res[1]["uneven_head"] is None
    assert sorted(np.concatenate([v["uneven_shuffle"] for v in res]).tolist()) == list(range(total))
