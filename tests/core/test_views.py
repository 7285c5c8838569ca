"""The zero-copy bridge: views inside Arrow buffers, shapes, refusals, copies, alignment, lifetime."""

from __future__ import annotations

import gc
import warnings
import weakref
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from deeprc_core.views import address, buffer_range

import deeprc_core as d

HAS_TENSOR_TYPE = hasattr(pa, "fixed_shape_tensor")


def _inside(view: np.ndarray, table: pa.Table, name: str) -> bool:
    lo, size = buffer_range(table, name)
    a = address(view)
    return lo <= a and a + view.nbytes <= lo + size


def test_numeric_column_is_a_view_inside_the_arrow_buffer() -> None:
    t = pa.table({"x": pa.array(np.arange(100, dtype=np.float64))})
    with d.counting_copies() as copies:
        v = d.column_view(t, "x")
    assert v.shape == (100,) and v.dtype == np.float64 and _inside(v, t, "x")
    assert address(v) == t.column("x").chunk(0).buffers()[1].address
    assert copies.count == {}


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64, np.float16, np.float32])
def test_every_fixed_width_numeric_type(dtype: type) -> None:
    t = pa.table({"x": pa.array(np.arange(10).astype(dtype))})
    v = d.column_view(t, "x")
    assert v.dtype == np.dtype(dtype) and (v == np.arange(10).astype(dtype)).all() and _inside(v, t, "x")


def test_slices_keep_their_offsets() -> None:
    t = pa.table({"x": pa.array(np.arange(100, dtype=np.int64))}).slice(37, 20)
    v = d.column_view(t, "x")
    assert (v == np.arange(37, 57)).all()
    assert address(v) == t.column("x").chunk(0).buffers()[1].address + 37 * 8


def test_fixed_size_list_is_an_n_by_k_view_and_slices_keep_offsets() -> None:
    values = pa.array(np.arange(30, dtype=np.float32))
    t = pa.table({"f": pa.FixedSizeListArray.from_arrays(values, 3)})
    v = d.column_view(t, "f")
    assert v.shape == (10, 3) and (v == np.arange(30).reshape(10, 3)).all() and _inside(v, t, "f")
    s = d.column_view(t.slice(4, 3), "f")
    assert (s == np.arange(12, 21).reshape(3, 3)).all() and np.shares_memory(s, v)


@pytest.mark.skipif(not HAS_TENSOR_TYPE, reason="pa.fixed_shape_tensor needs pyarrow >= 12")
def test_fixed_shape_tensor_column_is_an_n_shape_view() -> None:
    storage = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(24, dtype=np.float32)), 6)
    arr = pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.float32(), [2, 3]), storage)
    t = pa.table({"img": arr})
    v = d.column_view(t, "img")
    assert v.shape == (4, 2, 3) and (v.ravel() == np.arange(24)).all() and _inside(v, t, "img")
    assert (d.column_view(t.slice(1, 2), "img").ravel() == np.arange(6, 18)).all()


def test_chunked_columns_one_view_per_chunk_or_one_counted_combine() -> None:
    t = pa.concat_tables([pa.table({"x": np.arange(5.0)}), pa.table({"x": np.arange(5.0, 8.0)})])
    views = d.column_views(t, "x")
    assert [len(v) for v in views] == [5, 3]
    with pytest.raises(d.ZeroCopyError, match="2 chunks.*column_views"):
        d.column_view(t, "x")
    with d.counting_copies() as copies:
        whole = d.column_view(t, "x", copy=True)
    assert (whole == np.arange(8.0)).all() and copies.count == {"combine": 1} and copies.nbytes["combine"] == 64


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (pa.array([1.0, None, 3.0]), ["null", "fill_null"]),
        (pa.array([True, False, True]), ["bool", "bit-packed", "copy=True"]),
        (pa.array(["a", "b", "c"]), ["string", "variable width"]),
        (pa.array(["a", "b", "a"]).dictionary_encode(), ["dictionary"]),
        (pa.array([1, 2, 3], type=pa.timestamp("s")), ["timestamp"]),
        (pa.array([Decimal("1.5"), Decimal("2.5"), Decimal("3.5")]), ["decimal"]),
        (pa.array([[1.0], [2.0], [3.0]], type=pa.list_(pa.float64())), ["list"]),
    ],
)
def test_what_cannot_be_zero_copy_raises_naming_column_type_and_fix(array: pa.Array, words: list[str]) -> None:
    t = pa.table({"col_q": array})
    with pytest.raises(d.ZeroCopyError) as info:
        d.column_view(t, "col_q")
    msg = str(info.value)
    assert "'col_q'" in msg and str(array.type).split("[")[0].split("<")[0] in msg
    for w in words:
        assert w in msg


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (pa.array([1.0, None, 3.0]), [1.0, np.nan, 3.0]),
        (pa.array([True, False, True]), [True, False, True]),
        (pa.array(["a", "b", "a"]).dictionary_encode(), None),
        (pa.array([1, 2, 3], type=pa.timestamp("s")), [1, 2, 3]),
        (pa.array([Decimal("1.5"), Decimal("2.5"), Decimal("3.5")]), [1.5, 2.5, 3.5]),
        (pa.array([10, 20], type=pa.date32()), [10, 20]),
    ],
)
def test_copy_true_copies_once_and_counts_it(array: pa.Array, expected: list | None) -> None:
    t = pa.table({"c": array})
    if expected is None:  # dictionary of strings: not numeric even after decoding
        with pytest.raises(d.ZeroCopyError, match="even by copying"):
            d.column_view(t, "c", copy=True)
        return
    with d.counting_copies() as copies:
        v = d.column_view(t, "c", copy=True)
    np.testing.assert_array_equal(v, np.array(expected))
    assert copies.count == {"convert": 1}


def test_strings_cannot_be_copied_either_and_missing_columns_are_schema_errors() -> None:
    t = pa.table({"s": ["x"]})
    with pytest.raises(d.ZeroCopyError, match="encode it first"):
        d.column_view(t, "s", copy=True)
    with pytest.raises(d.SchemaError, match="no column 'nope'"):
        d.column_view(t, "nope")
    with pytest.raises(KeyError):  # SchemaError is a KeyError too
        d.column_views(t, "nope")


def test_int_nulls_cannot_become_nan() -> None:
    with pytest.raises(d.ZeroCopyError, match="float"):
        d.column_view(pa.table({"i": pa.array([1, None])}), "i", copy=True)


def test_empty_and_zero_chunk_columns() -> None:
    t = pa.table({"x": pa.array([], type=pa.float32())})
    assert d.column_view(t, "x").shape == (0,)
    z = pa.Table.from_batches([], schema=pa.schema([("x", pa.float64())]))
    assert d.column_view(z, "x").shape == (0,)


# --------------------------------------------------------------- packing
def test_pack_columns_copies_once_then_batches_are_views() -> None:
    t = pa.table({"a": np.arange(10.0), "b": np.arange(10, 20, dtype=np.int32), "keep": np.arange(10)})
    with d.counting_copies() as copies:
        packed = d.pack_columns(t, ["a", "b"], name="x")
    assert copies.count == {"pack": 1} and copies.nbytes["pack"] == 10 * 2 * 4
    assert packed.column_names == ["keep", "x"] and packed.schema.field("x").type == pa.list_(pa.float32(), 2)
    with d.counting_copies() as copies:
        v = d.column_view(packed, "x")
        batch = v[2:6]
    assert copies.count == {} and np.shares_memory(batch, v) and _inside(v, packed, "x")
    np.testing.assert_array_equal(v, np.stack([np.arange(10.0), np.arange(10, 20)], axis=1).astype(np.float32))
    assert d.is_aligned(v)


def test_pack_columns_of_a_chunked_table_and_errors() -> None:
    t = pa.concat_tables([pa.table({"a": [1.0, 2.0], "b": [3.0, 4.0]}), pa.table({"a": [5.0], "b": [6.0]})])
    v = d.column_view(d.pack_columns(t, ["a", "b"], keep=[]), "features")
    np.testing.assert_array_equal(v, [[1, 3], [2, 4], [5, 6]])
    with pytest.raises(d.SchemaError, match="nope"):
        d.pack_columns(t, ["a", "nope"])
    with pytest.raises(d.ZeroCopyError, match="'s'.*string"):
        d.pack_columns(pa.table({"s": ["x"]}), ["s"])
    with pytest.raises(d.ZeroCopyError, match="null"):
        d.pack_columns(pa.table({"n": [1.0, None]}), ["n"])


def test_pack_columns_as_tensor_or_a_clear_version_error() -> None:
    t = pa.table({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    if HAS_TENSOR_TYPE:
        packed = d.pack_columns(t, ["a", "b"], tensor=True)
        assert d.column_view(packed, "features").shape == (2, 2)
    else:
        with pytest.raises(ImportError, match="pyarrow >= 12"):
            d.pack_columns(t, ["a", "b"], tensor=True)


# ------------------------------------------------------------- alignment
def _misaligned_table() -> pa.Table:
    raw = np.arange(65, dtype=np.float64)
    off = raw[1:]  # pa.array(numpy) wraps numpy's memory: 8 bytes past a 64-byte boundary at best
    good = d.views.aligned_empty((64,), np.float64)
    good[:] = 1.0
    return pa.table({"bad": pa.array(off), "good": pa.array(good)})


def test_alignment_is_exposed_and_ensure_aligned_copies_only_what_needs_it() -> None:
    t = _misaligned_table()
    bad, good = d.column_view(t, "bad"), d.column_view(t, "good")
    assert not d.is_aligned(bad) and d.is_aligned(good)
    with d.counting_copies() as copies:
        fixed = d.ensure_aligned(t)
    assert copies.count == {"align": 1} and copies.nbytes["align"] == 64 * 8
    assert d.is_aligned(d.column_view(fixed, "bad")) and (d.column_view(fixed, "bad") == np.arange(1, 65)).all()
    assert address(d.column_view(fixed, "good")) == address(good)  # untouched, same buffer
    with d.counting_copies() as copies:
        d.ensure_aligned(fixed)
    assert copies.count == {}


def test_ensure_aligned_handles_list_columns_and_skips_strings() -> None:
    values = pa.array(np.arange(1, 13, dtype=np.float32)[1:])  # 11 values, misaligned start
    t = pa.table({"f": pa.FixedSizeListArray.from_arrays(values.slice(0, 10), 2), "s": list("abcde")})
    fixed = d.ensure_aligned(t)
    v = d.column_view(fixed, "f")
    assert d.is_aligned(v) and v.shape == (5, 2) and fixed.column("s").equals(t.column("s"))


def test_aligned_copy_and_take_rows_are_counted() -> None:
    v = np.arange(20.0).reshape(10, 2)
    with d.counting_copies() as copies:
        a = d.aligned_copy(v[1:], 64, "tf-batch")
        g = d.take_rows(v, np.array([3, 1]), alignment=64)
    assert d.is_aligned(a) and d.is_aligned(g) and (g == v[[3, 1]]).all()
    assert copies.count == {"tf-batch": 1, "gather": 1}


# ------------------------------------------------------- sliding windows
def test_sliding_windows_are_strided_read_only_views() -> None:
    t = d.pack_columns(pa.table({"a": np.arange(10.0), "b": np.arange(10.0) * 10}), ["a", "b"], keep=[])
    base = d.column_view(t, "features")
    with d.counting_copies() as copies:
        w = d.sliding_windows(base, 4, stride=3)
    assert copies.count == {} and w.shape == (3, 4, 2) and np.shares_memory(w, base)
    np.testing.assert_array_equal(w[2], base[6:10])
    assert not d.is_writable(w) and not d.memory_is_readonly(w)
    assert d.sliding_windows(base, 11).shape == (0, 11, 2)
    with pytest.raises(ValueError):
        d.sliding_windows(base, 0)


# ---------------------------------------------- lifetime and read-only
def test_view_keeps_the_arrow_buffer_alive() -> None:
    t = pa.table({"x": pa.array(np.arange(1000, dtype=np.float64))})
    buf = t.column("x").chunk(0).buffers()[1]
    ref = weakref.ref(t)
    v = d.column_view(t, "x")
    g = d.GlobalTable.from_arrow(t, d.LocalCommunicator())
    w = d.column_view(g.local, "x")
    del t, g, buf
    gc.collect()
    assert ref() is None  # the table is gone ...
    assert v.sum() == sum(range(1000)) and (w == np.arange(1000)).all()  # ... its memory is not


def _mapped_table(tmp_path: Path) -> pa.Table:
    path = tmp_path / "t.arrow"
    with ipc.new_file(str(path), pa.schema([("x", pa.float32())])) as w:
        w.write_table(pa.table({"x": np.arange(16, dtype=np.float32)}))
    return ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def test_memory_mapped_views_are_read_only_and_to_dlpack_safe_copies_them(tmp_path: Path) -> None:
    t = _mapped_table(tmp_path)
    v = d.column_view(t, "x")
    assert not d.is_writable(v) and d.memory_is_readonly(v)
    with pytest.raises(ValueError):
        v[0] = 1.0
    with d.counting_copies() as copies:
        safe = d.to_dlpack_safe(v)
    assert copies.count == {"readonly": 1} and safe.flags.writeable and not np.shares_memory(safe, v)
    assert d.is_aligned(safe) and (safe == np.arange(16)).all()
    with pytest.raises(d.ZeroCopyError, match="read-only memory"):
        d.to_dlpack_safe(v, readonly="error")
    with pytest.raises(ValueError, match="readonly="):
        d.to_dlpack_safe(v, readonly="allow")


def test_to_dlpack_safe_is_zero_copy_for_writable_memory() -> None:
    t = pa.table({"x": pa.array(np.arange(12.0))})
    v = d.column_view(t, "x")
    w = d.sliding_windows(v, 4)
    with d.counting_copies() as copies:
        assert d.to_dlpack_safe(v) is v
        alias = d.to_dlpack_safe(w, readonly="share")
    assert copies.count == {}
    assert address(alias) == address(w) and alias.strides == w.strides and (alias == w).all()
    alias.__dlpack__()  # legacy (unversioned) export works: no read-only flag to refuse it


def test_one_read_only_policy_for_every_consumer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy torch and tf both use: one function, one copy label, one warning."""
    from deeprc_core import readonly

    monkeypatch.setattr(readonly, "_warned_shared", False)
    w = d.sliding_windows(d.column_view(pa.table({"x": pa.array(np.arange(12.0))}), "x"), 4)
    mapped = d.column_view(_mapped_table(tmp_path), "x")
    with d.counting_copies() as copies:
        with pytest.warns(d.ReadOnlyBatchWarning, match="read-only views"):
            shared = d.to_dlpack_safe(w)  # auto: a flagged view of writable memory is shared, said once
        assert address(shared) == address(w)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            d.to_dlpack_safe(w)  # ... only once
        copied = d.to_dlpack_safe(w, readonly="copy")
        assert not np.shares_memory(copied, w) and (copied == w).all()
        # An immutable consumer (TensorFlow) aliases even read-only memory: it never writes.
        immutable = d.to_dlpack_safe(mapped, "error", consumer_writes=False)
        assert address(immutable) == address(mapped)
        immutable.__dlpack__()
    assert copies.count == {"readonly": 1}


def test_views_speak_dlpack() -> None:
    v = d.column_view(pa.table({"x": pa.array(np.arange(4.0))}), "x")
    assert hasattr(v, "__dlpack__") and v.__dlpack_device__() == (1, 0)  # kDLCPU, device 0
    back = np.from_dlpack(v)
    assert address(back) == address(v)


@pytest.mark.skipif(not hasattr(pa.Array, "__dlpack__"), reason="Arrow exports DLPack from pyarrow 15 on")
def test_arrow_dlpack_and_our_view_are_the_same_memory() -> None:
    arr = pa.array(np.arange(8, dtype=np.int32)).slice(2)
    t = pa.table({"x": arr})
    assert address(np.from_dlpack(arr)) == address(d.column_view(t, "x"))


# ------------------------------------------------------------------ torch
def test_torch_from_dlpack_shares_memory_with_the_column() -> None:
    torch = pytest.importorskip("torch")
    t = d.pack_columns(pa.table({"a": np.arange(6.0), "b": np.arange(6.0)}), ["a", "b"], keep=[])
    t = t.append_column("y", pa.array(np.arange(6, dtype=np.float32)))
    for name in ("features", "y"):
        v = d.column_view(t, name)
        tensor = torch.from_dlpack(v)
        assert tensor.data_ptr() == address(v) and _inside(v, t, name)
        assert tuple(tensor.shape) == v.shape
        tensor.view(-1)[0] = 42  # shared: the Arrow column sees the write
        assert d.column_view(t, name).ravel()[0] == 42


def test_torch_never_gets_a_writable_alias_of_read_only_memory(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    v = d.column_view(_mapped_table(tmp_path), "x")
    tensor = torch.from_dlpack(d.to_dlpack_safe(v))
    tensor[0] = 7.0  # safe: a private copy
    assert v[0] == 0.0 and tensor.data_ptr() != address(v)
