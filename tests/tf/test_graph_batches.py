"""The batches deeprc-tf cuts inside tf.data equal the core's own batches, for every plan shape.

``TableBatches.epoch()`` (numpy batches, what deeprc-torch and DeepRCSequence serve) is
the reference; the tf.data path gets the same plan in index form and must serve the same
samples in the same batches, in the same order, epoch after epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import deeprc_tf
from deeprc_core import GlobalTable, LocalCommunicator, TableBatches, copy_stats, reset_copy_stats

pytestmark = pytest.mark.tensorflow

ROWS = 403


def _table() -> pa.Table:
    rng = np.random.default_rng(7)
    t = rng.random(ROWS).astype(np.float32)
    t[[5, 50, 51, 300]] = np.nan  # dropna_target filters these
    flat = rng.random(ROWS * 3 + 1).astype(np.float32)
    return pa.table(
        {
            "a": rng.random(ROWS).astype(np.float32),
            "b": np.arange(ROWS, dtype=np.int64),  # cast to float32 (one counted copy)
            "c": pa.array(rng.random(ROWS + 1).astype(np.float32)[1:]),  # misaligned: one aligned copy
            "v": pa.FixedSizeListArray.from_arrays(pa.array(flat[1:]), 3),
            "t": t,
            "u": np.arange(ROWS, dtype=np.float32) * 2,
            "g": np.repeat(np.arange(4), [100, 100, 100, ROWS - 300]),
        }
    )


CASES: dict[str, dict[str, Any]] = {
    "rows-in-order": dict(features="v", target="u", batch=64),
    "columns-in-order": dict(features=["a", "b", "c"], target="u", batch=64),
    "columns-shuffled-dropna": dict(features=["a", "b", "c"], target="t", batch=50, shuffle=True),
    "global-shuffle": dict(features="v", target="t", batch=32, shuffle="global"),
    "no-target": dict(features=["a", "c"], target=None, batch=40, shuffle=True),
    "window-one-column": dict(features="a", target="u", batch=16, window=(12, 3)),
    "window-columns-group-shuffled": dict(
        features=["a", "b"],
        target=["t", "u"],
        batch=24,
        shuffle=True,
        window=dict(input_len=10, horizon=2, stride=2, group="g"),
    ),
    "window-drop-last": dict(features="v", target="u", batch=30, window=(8, 1), drop_last=True, shuffle=True),
}


def _reference(batches: TableBatches, epochs: int) -> list[tuple[Any, ...]]:
    out = []
    for epoch in range(epochs):
        for b in batches.epoch(epoch):
            out.append((b.x.copy(), None if b.y is None else b.y.copy(), b.index.copy()))
    return out


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("replicas", [1, 3])
def test_same_batches_as_the_core(name: str, replicas: int) -> None:
    case = dict(CASES[name])
    features, target, batch = case.pop("features"), case.pop("target"), case.pop("batch")
    gt = GlobalTable(_table(), LocalCommunicator())
    make = lambda: TableBatches(gt, features, target, batch, seed=4, align=64, **case)  # noqa: E731
    reference = _reference(make(), 2)
    stream = deeprc_tf.EpochPipeline(make(), local_replicas=replicas, record=True)
    ds = stream.dataset()
    assert int(ds.cardinality()) == stream.steps * replicas  # Keras reads the steps from it
    got = list(ds) + list(ds)  # two passes: epoch 0, then (the first one read to its end) epoch 1
    assert len(reference) == 2 * stream.steps and len(got) == 2 * stream.steps * replicas
    for k, (x, y, index) in enumerate(reference):
        parts = got[k * replicas : (k + 1) * replicas]
        if target is None:
            gx, gy = np.concatenate([p.numpy() for p in parts]), None
        else:
            gx = np.concatenate([p[0].numpy() for p in parts])
            gy = np.concatenate([p[1].numpy() for p in parts])
        np.testing.assert_array_equal(gx, x, err_msg=f"x of batch {k}")
        if y is not None:
            np.testing.assert_array_equal(gy, y, err_msg=f"y of batch {k}")
        np.testing.assert_array_equal(stream.served[k].index, index)


def test_pad_repeats_like_the_core() -> None:
    gt = GlobalTable(_table(), LocalCommunicator())
    make = lambda: TableBatches(gt, "v", "u", 100, seed=1, align=64, even="pad", shuffle=True, drop_last=True)  # noqa: E731
    ref = _reference(make(), 1)
    stream = deeprc_tf.EpochPipeline(make(), record=True)
    got = list(stream.dataset().take(stream.steps))
    for (x, y, _), (gx, gy) in zip(ref, got):
        np.testing.assert_array_equal(gx.numpy(), x)
        np.testing.assert_array_equal(gy.numpy(), y)


def test_columns_are_not_packed_and_copies_are_counted() -> None:
    """A list of feature columns is stacked per batch (counted per epoch), never packed into a table copy."""
    gt = GlobalTable(_table(), LocalCommunicator())
    reset_copy_stats()
    stream = deeprc_tf.EpochPipeline(TableBatches(gt, ["a", "u"], "u", 64, align=64))
    list(stream.dataset(prefetch=0).take(stream.steps))  # without prefetch: exactly one epoch planned
    stats = copy_stats()
    assert "pack" not in stats.count
    assert stats.count.get("stack") == 1 and stats.nbytes["stack"] == ROWS * 2 * 4
    reset_copy_stats()
    stream = deeprc_tf.EpochPipeline(TableBatches(gt, "v", "u", 64, align=64, shuffle=True))
    ds = stream.dataset(prefetch=0)
    list(ds) + list(ds)  # two epochs
    stats = copy_stats()
    assert stats.count.get("gather") == 2 and stats.nbytes["gather"] == 2 * ROWS * (3 + 1) * 4


def test_restart_records_a_new_generation() -> None:
    gt = GlobalTable(_table(), LocalCommunicator())
    stream = deeprc_tf.EpochPipeline(TableBatches(gt, "v", "u", 64, align=64, shuffle=True), record=True)
    ds = stream.dataset(prefetch=0)
    first = [b[1].numpy() for b in ds.take(stream.steps)]
    again = [b[1].numpy() for b in ds.take(stream.steps)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)  # a fresh iterator starts at epoch 0 again
    assert sorted({s.generation for s in stream.served}) == [0, 1]


GROUPED: dict[str, dict[str, Any]] = {
    "shuffled-dropna": dict(target="t", shuffle=True),
    "pad": dict(target=["u", "t"], shuffle=True, even="pad", drop_last=True),
    "no-target": dict(target=None, shuffle=True),
}


@pytest.mark.parametrize("name", sorted(GROUPED))
@pytest.mark.parametrize("replicas", [1, 3])
def test_separate_columns_out_of_order_are_stacked_by_the_core_a_group_at_a_time(
    name: str, replicas: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shuffled/filtered separate columns: groups of 3 batches from the core's stacker, the same batches."""
    monkeypatch.setattr(deeprc_tf.dataset, "GROUP_BYTES", 3 * 50 * 3 * 4)  # 3 batches of 50 x 3 float32
    case = dict(GROUPED[name])
    target = case.pop("target")
    gt = GlobalTable(_table(), LocalCommunicator())
    make = lambda: TableBatches(gt, ["a", "b", "c"], target, 50, seed=4, align=64, **case)  # noqa: E731
    reference = _reference(make(), 2)
    stream = deeprc_tf.EpochPipeline(make(), local_replicas=replicas, record=True)
    assert stream._grouped and stream._group_size == 3
    reset_copy_stats()
    ds = stream.dataset(prefetch=0)
    got = list(ds) + list(ds)  # epochs 0 and 1
    for k, (x, y, index) in enumerate(reference):
        parts = got[k * replicas : (k + 1) * replicas]
        gx = np.concatenate([(p if target is None else p[0]).numpy() for p in parts])
        np.testing.assert_array_equal(gx, x, err_msg=f"x of batch {k}")
        if y is not None:
            np.testing.assert_array_equal(np.concatenate([p[1].numpy() for p in parts]), y, err_msg=f"y of batch {k}")
        np.testing.assert_array_equal(stream.served[k].index, index)
    groups = 2 * -(-stream.steps // 3)
    # one counted copy of x (and one of y) per group, never of the table
    assert copy_stats().count.get("gather") == groups * (1 if target is None else 2)
    assert "pack" not in copy_stats().count and not stream._open  # both epochs ended: their threads stopped


def test_two_iterators_of_grouped_columns_do_not_share_a_group_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deeprc_tf.dataset, "GROUP_BYTES", 2 * 64 * 2 * 4)
    gt = GlobalTable(_table(), LocalCommunicator())
    stream = deeprc_tf.EpochPipeline(TableBatches(gt, ["a", "c"], "u", 64, align=64, shuffle=True), record=True)
    ds = stream.dataset(prefetch=0)
    first, second = iter(ds), iter(ds)
    a = [next(first)[1].numpy() for _ in range(3)]
    b = [next(second)[1].numpy() for _ in range(stream.steps)]
    a += [next(first)[1].numpy() for _ in range(stream.steps - 3)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # each iterator starts at epoch 0 and keeps its own place
    assert sorted({s.generation for s in stream.served}) == [0, 1]
