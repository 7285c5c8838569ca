"""make_dataset in one process (default strategy): misaligned and memory-mapped inputs train without crashing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from deeprc_core.views import column_view

import deeprc_tf
from deeprc_core import GlobalTable, LocalCommunicator, TableBatches, is_aligned

pytestmark = pytest.mark.tensorflow

N = 1000


def _misaligned_table() -> pa.Table:
    flat = np.random.default_rng(0).random(N * 4 + 1).astype(np.float32)
    x = pa.FixedSizeListArray.from_arrays(pa.array(flat[1:]), 4)  # the values start 4 bytes off
    y = pa.array(np.arange(N + 1, dtype=np.float32)[1:])
    table = pa.table({"x": x, "y": y})
    assert not is_aligned(column_view(table, "y"))
    return table


def _mmapped(table: pa.Table, path: str) -> pa.Table:
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return pa.ipc.open_file(pa.memory_map(path)).read_all()


def _full_pass(data: deeprc_tf.DistributedData, epoch: int) -> list[deeprc_tf.Served]:
    """The batches of ``epoch`` served by the last iterator that read all of it (Keras's build pass reads a few)."""
    served = data.served or []
    full = [s.generation for s in served if s.epoch == epoch and s.number == data.steps_per_epoch - 1]
    return [s for s in served if s.epoch == epoch and s.generation == max(full)]


def _tiny_model() -> object:
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1), keras.layers.Reshape(())])
    model.compile(optimizer="sgd", loss="mse")
    return model


@pytest.mark.parametrize("kind", ["misaligned", "mmap"])
def test_fit_on_awkward_buffers(kind: str, tmp_path: object) -> None:
    table = _misaligned_table()
    if kind == "mmap":
        table = _mmapped(table, f"{tmp_path}/t.arrow")
    gt = GlobalTable(table, LocalCommunicator())
    data = deeprc_tf.make_dataset(gt, "x", "y", 64, shuffle=True, seed=1, record=True)
    assert data.steps_per_epoch == 16 and data.num_workers == 1
    model = _tiny_model()
    history = model.fit(**data.fit_kwargs(), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    for epoch in (0, 1):
        ids = np.concatenate([s.index for s in _full_pass(data, epoch)])
        np.testing.assert_array_equal(np.sort(ids), np.arange(N))


def test_split_for_local_replicas_is_guarded() -> None:
    """Several replicas per worker cut each batch at unaligned offsets: TF copies those slices, never aborts."""
    import tensorflow as tf

    gt = GlobalTable(_misaligned_table(), LocalCommunicator())
    stream = deeprc_tf.EpochPipeline(TableBatches(gt, "x", "y", 50, align=64), local_replicas=3)
    total, sizes = 0.0, []
    for _, y in stream.dataset().take(3 * stream.steps):
        total += float(tf.reduce_sum(y))
        sizes.append(int(y.shape[0]))
    assert total == float(np.arange(1, N + 1).sum())
    assert sizes[:3] == [17, 17, 16]  # np.array_split sizes of a batch of 50


def test_validation_and_windows() -> None:
    rows = 400
    table = pa.table(
        {"a": np.arange(rows, dtype=np.float32), "b": np.ones(rows, np.float32), "t": np.arange(rows, dtype=np.float32)}
    )
    gt = GlobalTable(table, LocalCommunicator())
    data = deeprc_tf.make_dataset(gt, ["a", "b"], "t", 32, window=(10, 1), val=gt, shuffle=False)
    x, y = next(iter(data.dataset))
    assert tuple(x.shape) == (32, 10, 2) and tuple(y.shape) == (32, 1, 1)
    np.testing.assert_array_equal(x.numpy()[1, :, 0], np.arange(1, 11))
    assert data.validation_steps == data.steps_per_epoch == int(np.ceil((rows - 10) / 32))
    assert set(data.fit_kwargs()) == {
        "x",
        "steps_per_epoch",
        "shuffle",
        "callbacks",
        "validation_data",
        "validation_steps",
    }


def test_a_misspelt_batch_setting_names_the_accepted_ones() -> None:
    """The same check and words as deeprc-torch: both take the core's BatchSettings."""
    gt = GlobalTable(pa.table({"a": np.arange(64.0), "t": np.arange(64.0)}), LocalCommunicator())
    with pytest.raises(TypeError, match=r"make_dataset: unknown keyword\(s\) \['shufle'\]; the batch settings"):
        deeprc_tf.make_dataset(gt, ["a"], "t", 32, shufle=False)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"DeepRCSequence: unknown keyword\(s\) \['windows'\]"):
        deeprc_tf.DeepRCSequence(gt, ["a"], "t", 32, windows=(8, 2))  # type: ignore[call-arg]


def test_eval_window_differs_from_the_training_window() -> None:
    rows = 400
    table = pa.table({"a": np.arange(rows, dtype=np.float32), "t": np.arange(rows, dtype=np.float32)})
    gt = GlobalTable(table, LocalCommunicator())
    data = deeprc_tf.make_dataset(gt, ["a"], "t", 32, window=(10, 1, 4), val=gt, eval_window=(10, 1), shuffle=False)
    windows = rows - 11 + 1
    assert data.steps_per_epoch == int(np.ceil(((windows - 1) // 4 + 1) / 32))
    assert data.validation_steps == int(np.ceil(windows / 32))
    x, _ = next(iter(data.validation_data))
    np.testing.assert_array_equal(x.numpy()[:3, 0, 0], [0, 1, 2])  # every window
    x, _ = next(iter(data.dataset))
    np.testing.assert_array_equal(x.numpy()[:3, 0, 0], [0, 4, 8])  # every 4th
    with pytest.raises(ValueError, match="eval_window= needs window="):
        deeprc_tf.make_dataset(gt, ["a"], "t", 32, val=gt, eval_window=(10, 1))
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) \['val_window'\]"):  # the old name is gone
        deeprc_tf.make_dataset(gt, ["a"], "t", 32, window=(10, 1, 4), val=gt, val_window=(10, 1))  # type: ignore[call-arg]


def test_batch_size_must_be_a_positive_integer() -> None:
    gt = GlobalTable(_misaligned_table(), LocalCommunicator())
    with pytest.raises(ValueError, match="global_batch_size must be a positive integer, got 0"):
        deeprc_tf.make_dataset(gt, "x", "y", 0)
    for bad in ("8", 2.7):  # never coerced
        with pytest.raises(TypeError, match="global_batch_size must be a positive integer"):
            deeprc_tf.make_dataset(gt, "x", "y", bad)  # type: ignore[arg-type]


def test_second_fit_continues_the_plan_at_keras_epoch() -> None:
    """fit(initial_epoch=2) after fit(epochs=2) reads plan epochs 2 and 3 (new shuffles), not 0 and 1 again."""
    gt = GlobalTable(_misaligned_table(), LocalCommunicator())
    data = deeprc_tf.make_dataset(gt, "x", "y", 64, shuffle=True, seed=5, record=True)
    model = _tiny_model()
    model.fit(**data.fit_kwargs(), epochs=2, verbose=0)
    model.fit(**data.fit_kwargs(), epochs=4, initial_epoch=2, verbose=0)
    assert max(s.epoch for s in data.served or []) == 3  # nothing ran past the plan's epoch 3
    reference = TableBatches(gt, "x", "y", 64, shuffle=True, seed=5)
    for epoch in (2, 3):
        got = [s.index for s in _full_pass(data, epoch)]
        want = [b.index for b in reference.epoch(epoch)]
        assert len(got) == len(want) == data.steps_per_epoch
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_global_shuffle_with_too_short_epochs_is_refused() -> None:
    """Under several workers, a prefetch reaching the next epoch's global shuffle at once would desync collectives."""
    from deeprc_tf.dataset import check_global_shuffle_prefetch

    gt = GlobalTable(_misaligned_table(), LocalCommunicator())
    short = deeprc_tf.EpochPipeline(TableBatches(gt, "x", "y", 500, align=64, shuffle="global"))
    assert short.steps == 2
    with pytest.raises(ValueError, match="shuffle='global' with 2 step"):
        check_global_shuffle_prefetch(short, 2)
    longer = deeprc_tf.EpochPipeline(TableBatches(gt, "x", "y", 100, align=64, shuffle="global"))
    check_global_shuffle_prefetch(longer, 2)  # 10 steps: the prefetch stays inside the epoch
    check_global_shuffle_prefetch(deeprc_tf.EpochPipeline(TableBatches(gt, "x", "y", 500, align=64, shuffle=True)), 2)


def test_make_dataset_reads_a_path_like_the_torch_side(tmp_path: object) -> None:
    """A Parquet path is a source (issue: 'str' object has no attribute 'world_size'); wrong types name the accepted ones."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    a, b = rng.random(256).astype(np.float32), rng.random(256).astype(np.float32)
    path = f"{tmp_path}/data.parquet"
    pq.write_table(pa.table({"a": a, "b": b, "y": 2 * a - b}), path)
    data = deeprc_tf.make_dataset(path, ["a", "b"], "y", 64, shuffle=False, val=path, record=True)
    assert data.steps_per_epoch == 4 and data.validation_steps == 4
    x, y = next(iter(data.dataset))
    np.testing.assert_allclose(x.numpy(), np.stack([a[:64], b[:64]], axis=1))
    np.testing.assert_allclose(y.numpy(), (2 * a - b)[:64], rtol=1e-6)
    with pytest.raises(TypeError, match=r"make_dataset: source must be a deeprc_core.GlobalTable, a path"):
        deeprc_tf.make_dataset(pa.table({"a": a}), ["a"], None, 64)  # type: ignore[arg-type]


def test_predict_over_make_datasets_data_uses_its_table_columns_and_eval_window() -> None:
    """predict(model, data): every window of the training table once, in the evaluation window, in order."""
    import keras

    rows = 300
    a = np.arange(rows, dtype=np.float32)
    gt = GlobalTable(pa.table({"a": a, "t": 2 * a}), LocalCommunicator())
    data = deeprc_tf.make_dataset(gt, ["a"], "t", 32, window=(10, 1, 4), eval_window=(10, 1), shuffle=True)
    model = keras.Sequential([keras.Input((10, 1)), keras.layers.Flatten(), keras.layers.Dense(1)])
    got = deeprc_tf.predict(model, data)
    assert got is not None
    windows = rows - 11 + 1  # every window (the eval window's stride 1), not the training's every 4th
    np.testing.assert_array_equal(got.index, np.arange(windows))
    np.testing.assert_allclose(got.extra["true"].ravel(), 2 * a[10 : 10 + windows])
    x = np.stack([a[i : i + 10] for i in range(windows)])[..., None]
    np.testing.assert_allclose(got.pred, np.asarray(model(x)), rtol=1e-5, atol=1e-4)
    with pytest.raises(TypeError, match=r"deeprc_tf.predict: give features="):
        deeprc_tf.predict(model, gt)
