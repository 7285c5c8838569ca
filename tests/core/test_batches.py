"""TableBatches: shapes, zero-copy batches, windows, NaN targets, policies across real ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from deeprc_core.views import address

import deeprc_core as d
from deeprc_core import GlobalTable, LocalCommunicator, TableBatches
from tests.core.conftest import launch_env, launcher_params
from tests.support.ranks import run_ranks

BODIES = Path(__file__).with_name("ranks_data.py")


def _table(n: int = 50) -> GlobalTable:
    x = np.arange(n, dtype=np.float32)
    return GlobalTable.from_arrow(
        pa.table({"a": x, "b": x * 10, "y": x + 0.5, "g": np.arange(n) // 20}), LocalCommunicator()
    )


def test_single_column_batches_are_views_of_the_column() -> None:
    t = _table()
    with d.counting_copies() as copies:
        tb = TableBatches(t, "a", "y", 16)
        batches = list(tb.epoch(0))
    assert copies.count == {} and len(tb) == 4 and [len(b.index) for b in batches] == [16, 16, 16, 2]
    col = d.column_view(t.local, "a")
    assert address(batches[1].x) == address(col) + 16 * 4 and batches[1].x.shape == (16,)
    assert (batches[3].index == [48, 49]).all() and batches[0].padded is None


def test_several_feature_columns_are_stacked_per_batch_never_packed() -> None:
    with d.counting_copies() as copies:
        tb = TableBatches(_table(), ["a", "b"], ["y"], 20)
        batches = list(tb.epoch(0))
    # x: one copy per group of up to STACK_BYTES (here all 3 batches: 50 rows x 2 float32), never the whole
    # table at once; a list target is packed once
    assert copies.count == {"pack": 1, "stack": 1} and copies.nbytes["stack"] == 50 * 2 * 4  # 3 batches, one group
    assert all(b.x.flags.c_contiguous for b in batches)
    assert batches[0].x.shape == (20, 2) and batches[0].y.shape == (20, 1)
    assert (batches[1].x[0] == [20, 200]).all()


def test_shuffled_batch_is_one_counted_gather() -> None:
    tb = TableBatches(_table(), "a", "y", 10, shuffle=True, seed=1)
    with d.counting_copies() as copies:
        ids = np.concatenate([b.index for b in tb.epoch(0)])
    assert copies.count == {"gather": 10}  # x and y of 5 batches
    assert sorted(ids) == list(range(50))
    b = next(tb.epoch(0))
    assert (b.x == b.index.astype(np.float32)).all()


def test_windows_match_the_rows_they_cover() -> None:
    tb = TableBatches(_table(), ["a", "b"], "y", 8, window=(5, 2, 3))
    batches = list(tb.epoch(0))
    starts = np.concatenate([b.index for b in batches])
    assert starts.tolist() == list(range(0, 50 - 7 + 1, 3))
    b = batches[0]
    assert b.x.shape == (8, 5, 2) and b.y.shape == (8, 2, 1)
    assert (b.x[1, :, 0] == np.arange(3, 8)).all() and (b.y[1, :, 0] == np.arange(8, 10) + 0.5).all()


def test_windows_never_span_two_groups_and_nan_targets_are_skipped() -> None:
    tb = TableBatches(_table(), "a", "y", 64, window=d.Window(4, 1, group="g"))
    starts = np.concatenate([b.index for b in tb.epoch(0)])
    assert not any((s // 20) != ((s + 4) // 20) for s in starts) and 15 in starts and 16 not in starts
    y = np.arange(10, dtype=np.float64)
    y[3] = np.nan
    t = GlobalTable.from_arrow(pa.table({"a": np.arange(10.0), "y": pa.array(y).to_pylist()}), LocalCommunicator())
    t2 = GlobalTable.from_arrow(
        pa.table({"a": np.arange(10.0), "y": pa.array([0.0, 1, 2, 3, 4, None, 6, 7, 8, 9])}), LocalCommunicator()
    )
    for table, bad in ((t, 3), (t2, 5)):
        ids = np.concatenate([b.index for b in TableBatches(table, "a", "y", 4).epoch(0)])
        assert bad not in ids and len(ids) == 9


@pytest.mark.parametrize("kw", [{"shuffle": True}, {"window": (5, 2, 3)}, {"window": (5, 2, 3), "shuffle": True}, {}])
def test_epoch_rows_by_ranges_are_the_epochs_batches(kw: dict) -> None:
    y = np.arange(300, dtype=np.float64) + 0.5
    y[[7, 150]] = np.nan  # filtered rows: the rows are an index even unshuffled
    t = GlobalTable.from_arrow(pa.table({"a": np.arange(300.0), "b": np.arange(300.0), "y": y}), LocalCommunicator())
    tb = TableBatches(t, ["a", "b"], "y", 16, seed=4, **kw)
    served = [np.sort(b.index) for b in tb.epoch(1)]
    whole = tb.epoch_rows(1)
    assert whole.rows is not None and whole.first == 0 and len(whole.bounds) == len(served) + 1
    for first, last in ((0, 3), (3, len(served)), (5, 6)):
        part = tb.epoch_rows(1, first, last)
        assert part.first == first and part.bounds[0] == 0 and part.rows is not None
        for b in range(last - first):
            rows = part.rows[part.bounds[b] : part.bounds[b + 1]]
            assert (np.sort(tb.global_ids(rows)) == served[first + b]).all(), (first, b)
        lo, hi = whole.bounds[first], whole.bounds[last]
        assert (np.sort(part.rows) == np.sort(whole.rows[lo:hi])).all()


def test_align_gives_aligned_batches() -> None:
    tb = TableBatches(_table(), "a", "y", 7, align=64)
    assert all(d.is_aligned(b.x) and d.is_aligned(b.y) for b in tb.epoch(0))


def test_bad_inputs_are_clear_errors() -> None:
    t = GlobalTable.from_arrow(
        pa.table({"s": ["a"] * 4, "n": [1.0, None, 2.0, 3.0], "v": np.arange(4.0)}), LocalCommunicator()
    )
    with pytest.raises(d.ZeroCopyError, match="'s' has type string"):
        TableBatches(t, "s", None, 2)
    with pytest.raises(d.ZeroCopyError, match="'n' has 1 null"):
        TableBatches(t, "n", None, 2)
    with pytest.raises(d.SchemaError, match="nope"):
        TableBatches(t, "v", "nope", 2)
    with pytest.raises(ValueError, match="needs 6 rows"):
        TableBatches(t, "v", "v", 2, window=(5, 1))
    with pytest.raises(ValueError, match="cannot be combined with window"):
        TableBatches(t, "v", "v", 2, window=(2, 1), shuffle="global")
    with pytest.raises(ValueError, match="at least one column"):
        TableBatches(t, [], "v", 2)
    empty = GlobalTable.from_arrow(pa.table({"v": pa.array([], pa.float64())}), LocalCommunicator())
    with pytest.raises(d.DeepRCError, match="no samples"):
        TableBatches(empty, "v", None, 2)


@pytest.mark.parametrize(("bad", "kind"), [("8", TypeError), (2.7, TypeError), (True, TypeError), (0, ValueError)])
def test_batch_size_is_never_coerced(bad: object, kind: type) -> None:
    with pytest.raises(kind, match=r"dataset: batch_size must be a positive integer, got"):
        TableBatches(_table(), "a", "y", bad)  # type: ignore[arg-type]
    assert TableBatches(_table(), "a", "y", np.int64(8)).batch_size == 8


@pytest.mark.parametrize("bad", [-1, 1.0, "0"])
def test_epoch_must_be_a_non_negative_integer(bad: object) -> None:
    for shuffle in (False, True, "global"):
        b = TableBatches(_table(), "a", "y", 8, shuffle=shuffle)
        with pytest.raises((TypeError, ValueError), match="epoch must be a non-negative integer"):
            next(b.epoch(bad))  # type: ignore[arg-type]
        with pytest.raises((TypeError, ValueError), match="epoch must be a non-negative integer"):
            b.epoch_rows(bad)  # type: ignore[arg-type]


def test_global_shuffle_on_one_rank_covers_every_row() -> None:
    tb = TableBatches(_table(), "a", "y", 16, shuffle="global", seed=9)
    e0 = np.concatenate([b.index for b in tb.epoch(0)])
    e1 = np.concatenate([b.index for b in tb.epoch(1)])
    assert sorted(e0) == sorted(e1) == list(range(50)) and not (e0 == e1).all()
    b = next(tb.epoch(1))
    assert (b.x == b.index.astype(np.float32)).all()


# ---------------------------------------------------------- real processes
@pytest.fixture(scope="module")
def one_rank(etth1: Path) -> dict:
    from tests.core import ranks_data

    d.set_default_communicator(LocalCommunicator())
    try:
        return ranks_data.batches(str(etth1))
    finally:
        d.set_default_communicator(None)


@pytest.mark.parametrize(("launcher", "n"), launcher_params([("mpirun", 2), ("mpirun", 3), ("env", 3)]))
def test_policies_windows_and_global_shuffle_on_real_ranks(etth1: Path, one_rank: dict, launcher: str, n: int) -> None:
    res = [
        r.value
        for r in run_ranks(
            BODIES, "batches", n, launcher=launcher, env=launch_env(launcher), args=(str(etth1),), timeout=180
        )
    ]
    counts = [v["local_rows"] for v in res]
    assert len(set(counts)) > 1  # uneven partitions
    for even in ("drop", "pad", "rebalance"):
        nb = {v[even][0] for v in res}
        assert len(nb) == 1, (even, nb)  # every rank runs the same number of batches
    # drop: every used sample once; what is skipped is what the plan says
    drop_ids = np.concatenate([v["drop"][1] for v in res])
    assert len(np.unique(drop_ids)) == len(drop_ids) == sum(counts) - sum(v["drop"][4] for v in res)
    # pad: every sample at least once; the repeats are exactly the marked ones
    pad_ids = np.concatenate([v["pad"][1] for v in res])
    assert len(np.unique(pad_ids)) == sum(counts) and len(pad_ids) - sum(counts) == sum(v["pad"][3] for v in res)
    # rebalance: nothing dropped or repeated beyond one sample per rank
    reb_ids = np.concatenate([v["rebalance"][1] for v in res])
    assert len(np.unique(reb_ids)) == len(reb_ids) >= sum(counts) - n
    # global shuffle: the same global order as on one process, per epoch
    for e in (0, 1):
        assert (np.concatenate([v["global"][e] for v in res]) == one_rank["global"][e]).all()
    # windows: the same set as on one process, halos across partition ends included
    win = np.concatenate([v["windows"][1] for v in res])
    assert (np.unique(win) == np.sort(one_rank["windows"][1])).all()
    assert res[0]["windows"][2][1:] == (96, 2) and res[0]["windows"][3][1:] == (24, 1)
    ref = pacsv.read_csv(etth1)
    hufl, ot = ref.column("HUFL").to_numpy(), ref.column("OT").to_numpy()
    for v in res:
        s, x, y = v["last_window"]
        assert np.allclose(x[:, 0], hufl[s : s + 96]) and np.allclose(x[:, 1], ot[s : s + 96])
        assert np.allclose(y[:, 0], ot[s + 96 : s + 120])
        assert v["strings"] == "ZeroCopyError" and v["missing"] == "SchemaError"
        assert v["window_too_long"] == "ValueError"
        kind, msg, elapsed = v["empty_drop"]
        assert kind == "DeepRCError" and "rank(s) [1]" in msg and elapsed < 10
        assert v["empty_rebalance"][1] > 0
        assert v["empty_auto"][0] == "rebalance" and v["empty_auto"][2] > 0


@pytest.mark.parametrize("n", [2, 3])
def test_default_split_windows_shard_and_nan_on_real_ranks(n: int) -> None:
    """even='auto' spreads an ordered split; windows balance as windows; shard; NaN features fail every rank."""
    res = [r.value for r in run_ranks(BODIES, "balance_and_shard", n, launcher="env", timeout=150)]
    rows = 1000
    assert [v["shard"][:2] for v in res] == [(rows * r // n, rows * (r + 1) // n - rows * r // n) for r in range(n)]
    assert all("same whole frame" in v["shard_mismatch"] for v in res)
    for split, size in (("train", 800), ("val", 200)):
        assert {v[split][0] for v in res} == {"rebalance"}
        counts = [v[split][1] for v in res]
        assert max(counts) - min(counts) <= 1 and all(c > 0 for c in counts), counts
        ids = sorted(i for v in res for i in v[split][2])
        assert len(ids) == len(set(ids)) and len(ids) >= size - n, (split, len(ids))
    starts = [v["windows"][0] for v in res]
    assert sum(starts) == rows - 15 + 1 and max(starts) - min(starts) <= 1, starts
    assert sorted(i for v in res for i in v["windows"][1]) == list(range(rows - 14)), "every window once"
    for v in res:
        assert "feature column 'w' has" in v["nan"] and "NaN/inf" in v["nan"], v["nan"]
        assert v["nan_target"] == 10
