"""The alignment guard: nothing deeprc-tf hands TensorFlow can abort the process."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from deeprc_core.views import aligned_empty, column_view

import deeprc_tf
from deeprc_core import counting_copies, is_aligned

pytestmark = pytest.mark.tensorflow


def _misaligned(rows: int = 1024, cols: int = 16) -> np.ndarray:
    raw = np.arange(rows * cols + 16, dtype=np.float32)
    view = raw[1 : 1 + rows * cols].reshape(rows, cols)  # 4 bytes past an aligned start
    assert not is_aligned(view)
    return view


def _odd_byte_offset() -> np.ndarray:
    raw = np.zeros(8 * 512 + 64, np.uint8)
    view = raw[3 : 3 + 8 * 512].view(np.float64)  # not even 8-byte aligned
    view[:] = np.arange(512)
    return view


def test_aligned_view_is_zero_copy() -> None:
    import tensorflow as tf

    src = aligned_empty((256, 8), np.float32)
    src[...] = 1.0
    with counting_copies() as copies:
        t = deeprc_tf.to_tensor(src)
    assert copies.total_count == 0
    src[0, 0] = 42.0  # shared memory: the tensor sees it
    assert float(t[0, 0]) == 42.0
    assert float(tf.reduce_sum(t)) == 42.0 + 256 * 8 - 1


@pytest.mark.parametrize(
    "make",
    [
        _misaligned,
        lambda: _misaligned()[:, ::2],  # strided, misaligned
        lambda: column_view(pa.table({"a": pa.array(np.arange(4097, dtype=np.float32)[1:])}), "a"),
        lambda: _odd_byte_offset(),
    ],
    ids=["offset-4", "strided", "arrow-slice", "odd-byte-offset"],
)
def test_misaligned_inputs_are_copied_and_ops_run(make: object) -> None:
    import tensorflow as tf

    view = make()  # type: ignore[operator]
    with counting_copies() as copies:
        t = deeprc_tf.to_tensor(view)
    assert copies.count.get("tf-batch") == 1
    # Ops that would abort on a misaligned buffer (Check failed: IsAligned()) run fine.
    np.testing.assert_allclose(float(tf.reduce_sum(t)), float(np.sum(view, dtype=np.float64)), rtol=1e-5)
    np.testing.assert_array_equal((t * 2).numpy(), np.asarray(view) * 2)


def test_read_only_memory_mapped_ipc(tmp_path: object) -> None:
    import tensorflow as tf

    path = f"{tmp_path}/t.arrow"
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, pa.schema([("a", pa.float32())])) as w:
        w.write_table(pa.table({"a": np.arange(1000, dtype=np.float32)}))
    table = pa.ipc.open_file(pa.memory_map(path)).read_all()
    view = column_view(table, "a")
    assert not view.flags.writeable
    for v in (view, view[1:]):  # aligned or not, read-only memory is fine
        t = deeprc_tf.to_tensor(v)
        assert float(tf.reduce_sum(t)) == float(v.sum())


def test_empty_and_bad_dtype() -> None:
    assert tuple(deeprc_tf.to_tensor(np.empty((0, 3), np.float32)).shape) == (0, 3)
    with pytest.raises(TypeError, match="cannot become a TensorFlow tensor"):
        deeprc_tf.to_tensor(np.array(["a", "b"]))
