"""The adapter contract (deeprc_core.adapter): sources, plan diagnostics and resume checks, one for all adapters."""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from deeprc_core.adapter import ACCEPTED, check_resumable, resolve_source, warn_plan

from deeprc_core import BatchPlan, DeepRCError, GlobalTable, LocalCommunicator, TableBatches

from .conftest import EchoComm

TABLE = pa.table({"a": np.arange(10, dtype=np.float32), "y": np.arange(10, dtype=np.float32) * 2})


def _write(tmp_path: Path, kind: str) -> Path:
    if kind == "parquet":
        pq.write_table(TABLE, tmp_path / "t.parquet")
        return tmp_path / "t.parquet"
    if kind == "csv":
        pacsv.write_csv(TABLE, tmp_path / "t.csv")
        return tmp_path / "t.csv"
    if kind == "ipc":
        with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as sink, pa.ipc.new_file(sink, TABLE.schema) as w:
            w.write_table(TABLE)
        return tmp_path / "t.arrow"
    (tmp_path / "folder").mkdir()
    pq.write_table(TABLE.slice(0, 4), tmp_path / "folder" / "part-0.parquet")
    pq.write_table(TABLE.slice(4), tmp_path / "folder" / "part-1.parquet")
    return tmp_path / "folder"


@pytest.mark.parametrize("kind", ["parquet", "csv", "ipc", "folder"])
def test_paths_of_every_format_resolve_to_the_same_rows(tmp_path: Path, kind: str) -> None:
    path = _write(tmp_path, kind)
    for source in (path, str(path)):
        table = resolve_source(source, "test")
        assert isinstance(table, GlobalTable)
        got = table.local.select(["a", "y"]).cast(TABLE.schema)
        assert got.equals(TABLE)


def test_tables_and_functions_resolve_and_wrong_types_name_what_is_accepted() -> None:
    gt = GlobalTable(TABLE, LocalCommunicator())
    assert resolve_source(gt, "test") is gt
    assert resolve_source(lambda: gt, "test") is gt
    with pytest.raises(TypeError, match="the source function returned dict"):
        resolve_source(lambda: {}, "make_dataset")
    with pytest.raises(TypeError, match=r"make_dataset: source must be a deeprc_core.GlobalTable, a path") as err:
        resolve_source(TABLE, "make_dataset")  # type: ignore[arg-type]
    assert ACCEPTED in str(err.value) and "GlobalTable.from_arrow" in str(err.value)
    with pytest.raises(TypeError, match="not int"):
        resolve_source(3, "DeepRCDataModule")  # type: ignore[arg-type]


def _plan(counts: list[int], even: str) -> types.SimpleNamespace:
    plan = BatchPlan(counts[0], 4, EchoComm(0, len(counts), counts=counts), even=even)  # type: ignore[arg-type]
    return types.SimpleNamespace(plan=plan, even=even, window=None, nan_target_skipped=0)


def test_plan_warnings_say_what_is_skipped_or_repeated_once_in_one_text() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_plan(_plan([10, 7], "drop"), "make_dataset")  # type: ignore[arg-type]
        warn_plan(_plan([10, 7], "pad"), "DeepRCDataModule train")  # type: ignore[arg-type]
        warn_plan(_plan([8, 8], "drop"), "even")  # type: ignore[arg-type]
    texts = [str(w.message) for w in caught]
    assert len(texts) == 2, texts
    assert texts[0].startswith("make_dataset: even='drop' skips 2 of 17 samples")
    assert "[10, 7]" in texts[0] and "even='rebalance'" in texts[0]
    assert texts[1].startswith("DeepRCDataModule train: even='pad' repeats 3 samples every epoch")


def test_a_changed_plan_refuses_a_mid_epoch_resume() -> None:
    gt = GlobalTable(TABLE, LocalCommunicator())
    batches = TableBatches(gt, "a", "y", 2, shuffle=True, seed=3)
    check_resumable({"batch": 0, "seed": 99}, batches)  # an epoch boundary always resumes
    check_resumable({"batch": 2, "seed": 3, "num_batches": 5, "world_size": 1}, batches)
    with pytest.raises(DeepRCError, match="seed: saved 4, now 3"):
        check_resumable({"batch": 2, "seed": 4}, batches)


@pytest.mark.mpi
def test_the_numpy_adapter_example_is_a_complete_adapter() -> None:
    """examples/numpy_adapter.py, built only on the contract: coverage, reshuffle, resume and predict on 2 ranks."""
    from tests.support.ranks import run_ranks

    res = [r.value for r in run_ranks(Path(__file__).with_name("ranks_data.py"), "numpy_adapter", 2, args=("101",))]
    total = res[0]["total"]
    for e in range(2):  # every row once per epoch across the ranks (rebalanced: nothing dropped)
        seen = np.sort(np.concatenate([r["epochs"][e] for r in res]))
        np.testing.assert_array_equal(seen, np.arange(total, dtype=np.float32))
    assert not np.array_equal(res[0]["epochs"][0], res[0]["epochs"][1])  # epoch 1 has its own shuffle
    for r in res:  # a mid-epoch resume in a new loader yields exactly the rest of that epoch
        np.testing.assert_array_equal(r["resumed"], r["epochs"][1])
        np.testing.assert_array_equal(r["pred_index"], np.arange(total))
        np.testing.assert_array_equal(r["pred"], 10 * np.arange(total, dtype=np.float32))
