"""The zero-copy bridge: Arrow buffers as numpy views that frameworks take via DLPack.

A *view* here is a numpy array whose memory is an Arrow buffer (``np.frombuffer``):
no bytes move, and the array keeps the Arrow buffer alive through its ``.base`` chain,
so nothing dangles after the GlobalTable is dropped. numpy arrays implement
``__dlpack__``/``__dlpack_device__``, so ``torch.from_dlpack(view)`` and
``tf.experimental.dlpack.from_dlpack(view.__dlpack__())`` share the memory; on
pyarrow < 15 (no Arrow DLPack export) this path is the same, since it only needs
Arrow's buffer protocol.

What is zero-copy: fixed-width numeric columns (ints, unsigned ints, floats) without
nulls -> 1-D views; ``fixed_size_list<numeric>[k]`` -> ``(n, k)`` views;
``fixed_shape_tensor`` (pyarrow >= 12) -> ``(n, *shape)`` views. Slices keep their offsets.

What is not: nulls, booleans (bit-packed), strings, dictionaries, timestamps, dates,
decimals, and tables whose column has several chunks. These raise
:class:`~deeprc_core.errors.ZeroCopyError` naming the column, type and fix, unless the
caller passes ``copy=True``, in which case the copy is made once and counted
(:func:`deeprc_core.copy_stats`).

Read-only memory (memory-mapped files) yields read-only views (``view.flags.writeable``
is False); :mod:`deeprc_core.readonly` hands such views to DLPack consumers safely.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from .copies import record_copy
from .errors import SchemaError, ZeroCopyError

#: Alignment TensorFlow requires of every tensor buffer (it aborts the process otherwise).
TF_ALIGNMENT = 64

_FIX = (
    "pass copy=True to copy it once (counted), cast it to a float/int column first, "
    "or pack feature columns with deeprc_core.pack_columns"
)


def _is_plain_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def _primitive_view(arr: pa.Array, name: str) -> np.ndarray:
    """Zero-copy numpy view of a numeric, null-free, single-chunk Arrow array."""
    dtype = np.dtype(arr.type.to_pandas_dtype())
    data = arr.buffers()[1]
    if data is None or len(arr) == 0:
        return np.empty(0, dtype=dtype)
    view = np.frombuffer(data, dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)
    return view


def _why_not(name: str, t: pa.DataType) -> str | None:
    if _is_plain_numeric(t):
        return None
    if pa.types.is_fixed_size_list(t):
        inner = _why_not(name, t.value_type)
        return None if inner is None else inner
    if _is_fixed_shape_tensor(t):
        return _why_not(name, t.storage_type)
    kind = (
        "booleans are bit-packed"
        if pa.types.is_boolean(t)
        else "strings have variable width"
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
        else "dictionary columns hold indices, not values"
        if pa.types.is_dictionary(t)
        else "timestamps/dates carry units and time zones"
        if pa.types.is_temporal(t)
        else "decimals have no tensor dtype"
        if pa.types.is_decimal(t)
        else "this type has no fixed-width tensor layout"
    )
    return f"column {name!r} has type {t}: {kind}"


def _is_fixed_shape_tensor(t: pa.DataType) -> bool:
    return isinstance(t, pa.BaseExtensionType) and t.extension_name == "arrow.fixed_shape_tensor"


def _null_check(arr: pa.Array, name: str) -> None:
    if arr.null_count:
        raise ZeroCopyError(
            f"column {name!r} ({arr.type}) has {arr.null_count} null(s) in this partition; a tensor cannot "
            "hold nulls. Fill or drop them first (pyarrow.compute.fill_null / GlobalTable.filter), "
            "or pass copy=True to copy with nulls as NaN (floats only)"
        )


def array_view(arr: pa.Array, name: str = "<array>", copy: bool = False) -> np.ndarray:
    """View one Arrow array (a single chunk) as numpy without copying.

    Shapes: numeric -> ``(n,)``; ``fixed_size_list<T>[k]`` -> ``(n, k)`` (nested lists
    give more dimensions); ``fixed_shape_tensor`` -> ``(n, *shape)``.
    """
    t = arr.type
    reason = _why_not(name, t)
    if reason is not None or arr.null_count or _has_child_nulls(arr):
        if not copy:
            if reason is None:
                _null_check(arr, name)
                raise ZeroCopyError(f"column {name!r} ({t}) has nulls inside its lists; fill them first, or {_FIX}")
            raise ZeroCopyError(f"{reason}; {_FIX}")
        out = _copy_to_numpy(arr, name)
        record_copy("convert", out.nbytes, f"column {name!r} ({t})")
        return out
    if _is_fixed_shape_tensor(t):
        storage = arr.storage if hasattr(arr, "storage") else arr.cast(t.storage_type)
        flat = array_view(storage, name)
        return flat.reshape((len(arr), *t.shape))
    if pa.types.is_fixed_size_list(t):
        child = arr.flatten()  # respects the parent's offset (a zero-copy slice of the values)
        inner = array_view(child, name)
        return inner.reshape((len(arr), t.list_size, *inner.shape[1:]))
    return _primitive_view(arr, name)


def _has_child_nulls(arr: pa.Array) -> bool:
    t = arr.type
    if _is_fixed_shape_tensor(t):
        arr = arr.storage
        t = arr.type
    while pa.types.is_fixed_size_list(t):
        arr = arr.flatten()
        if arr.null_count:
            return True
        t = arr.type
    return False


def _copy_to_numpy(arr: pa.Array, name: str) -> np.ndarray:
    t = arr.type
    if _is_fixed_shape_tensor(t):
        return _copy_to_numpy(arr.storage, name).reshape((len(arr), *t.shape))
    if pa.types.is_fixed_size_list(t):
        inner = _copy_to_numpy(arr.flatten(), name)
        return inner.reshape((len(arr), t.list_size, *inner.shape[1:]))
    if pa.types.is_boolean(t) or _is_plain_numeric(t):
        if arr.null_count and not pa.types.is_floating(t):
            raise ZeroCopyError(f"column {name!r} ({t}) has nulls, which only float columns can hold as NaN")
        return np.asarray(arr.to_numpy(zero_copy_only=False))
    if pa.types.is_dictionary(t):
        return _copy_to_numpy(arr.dictionary_decode(), name)
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_duration(t):
        # Timestamps, dates, times and durations become their integer counts (units of the type).
        width = pa.int32() if t.bit_width == 32 else pa.int64()
        if arr.null_count:
            raise ZeroCopyError(
                f"column {name!r} ({t}) has nulls, which an integer tensor cannot hold; fill them first"
            )
        return np.asarray(arr.cast(width).to_numpy(zero_copy_only=False))
    if pa.types.is_decimal(t):
        return np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False))
    raise ZeroCopyError(f"column {name!r} has type {t}, which cannot become a tensor even by copying; encode it first")


def column_views(table: pa.Table, name: str, copy: bool = False) -> list[np.ndarray]:
    """One zero-copy view per chunk of ``table[name]``."""
    if name not in table.column_names:
        raise SchemaError(f"no column {name!r}; the table has {table.column_names}")
    return [array_view(chunk, name, copy) for chunk in table.column(name).chunks]


def column_view(table: pa.Table, name: str, copy: bool = False) -> np.ndarray:
    """A zero-copy view of a whole column (see :func:`array_view` for shapes).

    A column of several chunks cannot be one view: it raises ZeroCopyError unless
    ``copy=True``, which combines the chunks once (counted as ``combine``).
    """
    if name not in table.column_names:
        raise SchemaError(f"no column {name!r}; the table has {table.column_names}")
    col = table.column(name)
    if col.num_chunks == 1:
        return array_view(col.chunk(0), name, copy)
    if col.num_chunks == 0:
        return array_view(_empty_array(col.type), name, copy)
    if not copy:
        raise ZeroCopyError(
            f"column {name!r} has {col.num_chunks} chunks, so it is not one buffer; use column_views() for a "
            "view per chunk, combine the table once (table.combine_chunks(), or deeprc_core.pack_columns), "
            "or pass copy=True"
        )
    views = [array_view(c, name, copy=True) for c in col.chunks]
    out = np.concatenate(views)
    record_copy("combine", out.nbytes, f"column {name!r} ({col.num_chunks} chunks)")
    return out


def _empty_array(t: pa.DataType) -> pa.Array:
    if isinstance(t, pa.BaseExtensionType):
        return pa.ExtensionArray.from_storage(t, pa.array([], type=t.storage_type))
    return pa.array([], type=t)


def buffer_range(table: pa.Table, name: str) -> tuple[int, int]:
    """(address, size) of the data buffer under a single-chunk numeric/list column."""
    arr = table.column(name).chunk(0)
    while not _is_plain_numeric(arr.type):
        arr = arr.storage if _is_fixed_shape_tensor(arr.type) else arr.values
    buf = arr.buffers()[1]
    return int(buf.address), int(buf.size)


def address(view: np.ndarray) -> int:
    """Address of the first element."""
    return int(view.__array_interface__["data"][0])


def is_aligned(view: np.ndarray, alignment: int = TF_ALIGNMENT) -> bool:
    """True when the view's first element sits on an ``alignment``-byte boundary."""
    return view.size == 0 or address(view) % alignment == 0


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype | type, alignment: int = TF_ALIGNMENT) -> np.ndarray:
    """A writable numpy array in an Arrow-allocated buffer (64-byte aligned by Arrow's pool)."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) if shape else 1
    buf = pa.allocate_buffer(max(n * dt.itemsize, 1))
    arr = np.frombuffer(buf, dtype=dt, count=n).reshape(shape)
    if not is_aligned(arr, alignment):  # Arrow's pool guarantees 64; a larger request may not hold
        raw = pa.allocate_buffer(n * dt.itemsize + alignment)
        shift = (-raw.address) % alignment
        arr = np.frombuffer(raw, dtype=np.uint8, count=n * dt.itemsize, offset=shift).view(dt).reshape(shape)
    return arr


def pack_columns(
    table: pa.Table,
    columns: Sequence[str],
    name: str = "features",
    dtype: np.dtype | type = np.float32,
    keep: Sequence[str] | None = None,
    tensor: bool = False,
) -> pa.Table:
    """Pack scalar numeric ``columns`` into one ``fixed_size_list<dtype>[k]`` column, once.

    With ``tensor=True`` the column is a ``pa.fixed_shape_tensor(dtype, [k])`` instead
    (pyarrow >= 12; older versions raise ImportError naming the version: use the
    fixed-size list, which gives the same ``(n, k)`` views).

    The one copy (counted as ``pack``) writes row-major into a single 64-byte-aligned
    Arrow buffer; every later batch of the packed column is a view. Returns a table with
    the packed column plus the ``keep`` columns (default: all columns not packed).
    Chunked inputs are fine (they are written into the one buffer); nulls are not.
    """
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise SchemaError(f"pack_columns: no column(s) {missing}; the table has {table.column_names}")
    if tensor and not hasattr(pa, "fixed_shape_tensor"):
        raise ImportError(
            f"pack_columns(tensor=True) needs pyarrow >= 12 for pa.fixed_shape_tensor (this is {pa.__version__}); "
            "use tensor=False: the fixed_size_list column gives the same zero-copy (n, k) views"
        )
    if not columns:
        raise ValueError("pack_columns needs at least one column")
    n, k = table.num_rows, len(columns)
    out = aligned_empty((n, k), dtype)
    for j, c in enumerate(columns):
        col = table.column(c)
        t = col.type
        if not (_is_plain_numeric(t) or pa.types.is_boolean(t)):
            raise ZeroCopyError(f"pack_columns: column {c!r} has type {t}; only numeric columns can be packed")
        if col.null_count:
            raise ZeroCopyError(
                f"pack_columns: column {c!r} has {col.null_count} null(s) on this rank; fill or drop them first"
            )
        row = 0
        for chunk in col.chunks:
            m = len(chunk)
            src = chunk.to_numpy(zero_copy_only=False) if pa.types.is_boolean(t) else _primitive_view(chunk, c)
            out[row : row + m, j] = src
            row += m
    record_copy("pack", out.nbytes, f"{k} columns into {name!r}")
    values = pa.Array.from_buffers(pa.from_numpy_dtype(np.dtype(dtype)), n * k, [None, pa.py_buffer(out)])
    packed = pa.FixedSizeListArray.from_arrays(values, k)
    if tensor:
        packed = pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(values.type, [k]), packed)
    keep_cols = [c for c in table.column_names if c not in columns] if keep is None else list(keep)
    result = table.select(keep_cols) if keep_cols else pa.table({})
    if result.num_columns == 0:
        return pa.table({name: packed})
    return result.append_column(name, packed)


def ensure_aligned(table: pa.Table, columns: Sequence[str] | None = None, alignment: int = TF_ALIGNMENT) -> pa.Table:
    """Re-allocate, once and counted (``align``), only the columns whose buffers are misaligned.

    After this every numeric / fixed-size-list column in ``columns`` (default: all
    eligible) is a single chunk starting on an ``alignment``-byte boundary, so
    TensorFlow can wrap it without aborting the process.
    """
    names = list(table.column_names if columns is None else columns)
    for c in names:
        col = table.column(c)
        if _why_not(c, col.type) is not None:
            continue
        if col.num_chunks == 1:
            view = array_view(col.chunk(0), c, copy=True) if col.null_count else array_view(col.chunk(0), c)
            if is_aligned(view, alignment) and view.flags.c_contiguous:
                continue
        else:
            view = column_view(table, c, copy=True)
        fresh = aligned_empty(view.shape, view.dtype, alignment)
        fresh[...] = view
        record_copy("align", fresh.nbytes, f"column {c!r}")
        table = table.set_column(table.column_names.index(c), c, _array_like(col.type, fresh))
    return table


def _array_like(t: pa.DataType, data: np.ndarray) -> pa.Array:
    """An Arrow array of type ``t`` over ``data``'s memory (no copy)."""
    if _is_fixed_shape_tensor(t):
        storage = _array_like(t.storage_type, data.reshape(len(data), -1))
        return pa.ExtensionArray.from_storage(t, storage)
    if pa.types.is_fixed_size_list(t):
        child = _array_like(t.value_type, data.reshape(len(data) * t.list_size, *data.shape[2:]))
        return pa.FixedSizeListArray.from_arrays(child, t.list_size)
    return pa.Array.from_buffers(t, len(data), [None, pa.py_buffer(data)])


def sliding_windows(view: np.ndarray, length: int, stride: int = 1) -> np.ndarray:
    """Zero-copy, read-only windows ``(num_windows, length, *view.shape[1:])`` over axis 0.

    Window i covers rows ``[i*stride, i*stride + length)``. Never materialised:
    ``np.lib.stride_tricks.as_strided`` reuses the view's memory.
    """
    if length < 1 or stride < 1:
        raise ValueError(f"window length ({length}) and stride ({stride}) must be positive")
    n = view.shape[0]
    count = 0 if n < length else (n - length) // stride + 1
    shape = (count, length, *view.shape[1:])
    strides = (view.strides[0] * stride, *view.strides)
    return np.lib.stride_tricks.as_strided(view, shape=shape, strides=strides, writeable=False)


def aligned_copy(view: np.ndarray, alignment: int = TF_ALIGNMENT, reason: str = "align") -> np.ndarray:
    """A C-contiguous copy of ``view`` in an aligned buffer (counted under ``reason``)."""
    out = aligned_empty(view.shape, view.dtype, alignment)
    out[...] = view
    record_copy(reason, out.nbytes, "batch")
    return out


def take_rows(view: np.ndarray, index: np.ndarray, alignment: int | None = None, reason: str = "gather") -> np.ndarray:
    """Gather rows ``index`` of ``view`` into one new array (one copy, counted under ``reason``).

    With ``alignment`` the result lies on that byte boundary (for TensorFlow).
    """
    shape = (len(index), *view.shape[1:])
    out = aligned_empty(shape, view.dtype, alignment) if alignment else np.empty(shape, dtype=view.dtype)
    np.take(view, index, axis=0, out=out)
    record_copy(reason, out.nbytes, "batch")
    return out
