"""The one batch-settings record every adapter takes (deeprc_core.batch_settings)."""

from __future__ import annotations

import typing
from dataclasses import fields

import numpy as np
import pyarrow as pa
import pytest
from deeprc_core.batch_settings import BatchOptions, BatchSettings, as_numpy_dtype

from deeprc_core import GlobalTable, LocalCommunicator, TableBatches, Window


def test_the_keywords_and_the_record_list_the_same_settings() -> None:
    assert set(typing.get_type_hints(BatchOptions)) == {f.name for f in fields(BatchSettings)}


def test_options_are_checked_and_normalised_once() -> None:
    s = BatchSettings.from_options("x", {"shuffle": True, "window": (8, 2), "dtype": "float64", "seed": "3"})
    assert s.shuffle == "local" and s.window == Window(8, 2) and s.eval_window == s.window
    assert s.dtype == np.float64 and s.seed == 3
    ev = s.for_eval()
    assert ev.shuffle == "none" and not ev.drop_last and ev.window == s.eval_window
    with pytest.raises(TypeError, match=r"loader: unknown keyword\(s\) \['shufle'\]; the batch settings are \["):
        BatchSettings.from_options("loader", {"shufle": True})
    with pytest.raises(ValueError, match="make_dataset: even='odd'"):
        BatchSettings.from_options("make_dataset", {"even": "odd"})
    with pytest.raises(ValueError, match="readonly="):
        BatchSettings.from_options("x", {"readonly": "maybe"})
    with pytest.raises(ValueError, match="eval_window= needs window="):
        BatchSettings.from_options("x", {"eval_window": (8, 2)})
    with pytest.raises(ValueError, match="shuffle='global' cannot be combined with window="):
        BatchSettings.from_options("x", {"shuffle": "global", "window": (8, 2)})


def test_framework_dtypes_become_numpy_dtypes_without_importing_the_framework() -> None:
    class TorchLike:  # what torch.float16 prints as
        def __str__(self) -> str:
            return "torch.float16"

    class TfLike:
        as_numpy_dtype = np.int32

    assert as_numpy_dtype(TorchLike()) == np.float16
    assert as_numpy_dtype(TfLike()) == np.int32
    assert as_numpy_dtype(np.float32) == np.float32 and as_numpy_dtype("float64") == np.float64


def test_table_batches_of_training_and_evaluation_splits() -> None:
    t = GlobalTable(pa.table({"a": np.arange(100.0), "y": np.arange(100.0)}), LocalCommunicator())
    s = BatchSettings.from_options("x", {"window": (10, 1, 5), "eval_window": (10, 1), "drop_last": True})
    train = TableBatches(t, "a", "y", 8, s)
    evaluation = TableBatches(t, "a", "y", 8, s.for_eval())
    assert train.window == Window(10, 1, 5) and evaluation.window == Window(10, 1)
    assert train.num_samples < evaluation.num_samples


def test_table_batches_take_the_record_or_its_keywords_not_both() -> None:
    t = GlobalTable(pa.table({"a": np.arange(100.0), "y": np.arange(100.0)}), LocalCommunicator())
    s = BatchSettings.from_options("x", {"shuffle": True, "seed": 3})
    by_record, by_keywords = TableBatches(t, "a", "y", 8, s), TableBatches(t, "a", "y", 8, shuffle=True, seed=3)
    assert by_record.settings == by_keywords.settings
    assert [b.index.tolist() for b in by_record.epoch(1)] == [b.index.tolist() for b in by_keywords.epoch(1)]
    assert TableBatches(t, "a", "y", 8).shuffle == "none"  # TableBatches reads in order unless asked
    with pytest.raises(TypeError, match="not both"):
        TableBatches(t, "a", "y", 8, s, seed=4)
    with pytest.raises(TypeError, match="must be a BatchSettings record"):
        TableBatches(t, "a", "y", 8, {"shuffle": True})  # type: ignore[arg-type]
    p = BatchSettings.from_options("x", {"window": (10, 1, 5), "drop_last": True}).for_prediction(dropna_target=True)
    assert (p.shuffle, p.even, p.drop_last, p.dropna_target, p.window) == ("none", "pad", False, True, Window(10, 1, 5))
    assert s.for_prediction(window=(4, 1)).window == Window(4, 1)
