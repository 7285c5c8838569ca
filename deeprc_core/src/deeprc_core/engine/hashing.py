"""Deterministic, vectorised row hashes of key columns (the same on every rank and process).

Python's ``hash()`` of ``str`` is salted per process, so it cannot route rows between
ranks. Here every key value is turned into an unsigned 64-bit integer with numpy only:

* integers, booleans and temporal values (timestamps, dates, times, durations) by their
  integer representation, floats by their IEEE bits (``-0.0`` folded into ``0.0``, every
  NaN into one NaN), then mixed with the splitmix64 finaliser;
* strings and binaries with 64-bit FNV-1a over the bytes, computed column-wise over the
  offsets buffer (one numpy step per byte position, for all strings at once), on the
  dictionary of distinct values so repeated keys are hashed once;
* dictionary arrays through their dictionary, decimals through their text form;
* nulls as one fixed constant, so equal keys and nulls always land together.

Several key columns are folded into one hash with a boost-style ``hash_combine``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SchemaError
from .compat import is_string_view, is_view_type

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
#: Hash of a null key (any column type).
NULL_HASH = np.uint64(0x6A09E667F3BCC909)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser applied element-wise to a uint64 array (returns a new array).

    Works in place on the result with one scratch array, so hashing n keys allocates 2n
    words instead of one temporary per step.
    """
    z = x + _GOLDEN
    tmp = np.empty_like(z)
    for shift, mult in ((30, _MIX1), (27, _MIX2), (31, None)):
        np.right_shift(z, np.uint64(shift), out=tmp)
        z ^= tmp
        if mult is not None:
            z *= mult
    return z


def fnv1a_binary(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a of every variable-length value given by ``offsets`` (n+1) into ``data`` (uint8).

    Values are processed longest first so that at byte position j the values still
    running are a prefix of the order: one vectorised step per position, no row loop.
    """
    n = offsets.size - 1
    starts = offsets[:-1].astype(np.int64, copy=False)
    lengths = (offsets[1:] - offsets[:-1]).astype(np.int64, copy=False)
    order = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[order]
    sorted_start = starts[order]
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    maxlen = int(sorted_len[0]) if n else 0
    # active[j] = number of values longer than j (sorted_len is non-increasing)
    active = np.searchsorted(-sorted_len, -np.arange(maxlen), side="left") if maxlen else np.empty(0, np.int64)
    for j in range(maxlen):
        k = int(active[j])
        h[:k] ^= data[sorted_start[:k] + j].astype(np.uint64)
        h[:k] *= _FNV_PRIME
    h ^= sorted_len.astype(np.uint64)  # length in, so "" and missing trailing bytes differ
    out = np.empty(n, dtype=np.uint64)
    out[order] = h
    return out


def _binary_hash(arr: pa.Array) -> np.ndarray:
    """FNV-1a of a (large_)string/(large_)binary array without nulls handled (values only)."""
    if is_view_type(arr.type):
        arr = arr.cast(pa.large_string() if is_string_view(arr.type) else pa.large_binary())
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    bufs = arr.buffers()
    off_type = np.int64 if large else np.int32
    offsets = np.frombuffer(
        bufs[1], dtype=off_type, count=len(arr) + 1, offset=arr.offset * np.dtype(off_type).itemsize
    )
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
    return fnv1a_binary(offsets, data)


def _fixed_binary_hash(arr: pa.Array) -> np.ndarray:
    width = arr.type.byte_width
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8, count=(arr.offset + len(arr)) * width)
    rows = raw[arr.offset * width :].reshape(len(arr), width)
    h = np.full(len(arr), _FNV_OFFSET, dtype=np.uint64)
    for j in range(width):
        h ^= rows[:, j].astype(np.uint64)
        h *= _FNV_PRIME
    return h


def _values_as_uint64(arr: pa.Array, encode: bool = True) -> np.ndarray:
    """The hashable integer representation of every slot (null slots hold arbitrary values)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        dict_hash = _values_as_uint64(arr.dictionary, encode=False)
        dict_hash = np.where(arr.dictionary.is_null().to_numpy(zero_copy_only=False), NULL_HASH, dict_hash)
        idx = arr.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        return dict_hash[idx] if dict_hash.size else np.zeros(len(arr), np.uint64)
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or is_view_type(t)
    ):
        if encode and len(arr) > 64:
            # hash each distinct value once; FNV work is then proportional to the distinct bytes
            enc = pc.dictionary_encode(arr)
            return _values_as_uint64(enc)
        return splitmix64(_binary_hash(arr))
    if pa.types.is_fixed_size_binary(t):
        return splitmix64(_fixed_binary_hash(arr))
    if pa.types.is_decimal(t):  # its fixed-width storage (casting decimals to string needs pyarrow >= 11)
        return splitmix64(_fixed_binary_hash(arr.view(pa.binary(t.byte_width))))
    if pa.types.is_null(t):
        return np.full(len(arr), NULL_HASH, dtype=np.uint64)
    if arr.null_count and not pa.types.is_temporal(t):
        arr = arr.fill_null(False if pa.types.is_boolean(t) else pa.scalar(0, t))
    if pa.types.is_boolean(t):
        return splitmix64(arr.to_numpy(zero_copy_only=False).astype(np.uint64))
    if pa.types.is_integer(t):
        ints = arr.to_numpy(zero_copy_only=False)
        # 64-bit ints are reinterpreted in place (splitmix64 makes the one new array)
        return splitmix64(ints.view(np.uint64) if ints.dtype.itemsize == 8 else ints.astype(np.uint64))
    if pa.types.is_floating(t):
        x = arr.to_numpy(zero_copy_only=False).astype(np.float64) + 0.0  # -0.0 -> 0.0
        x[np.isnan(x)] = np.nan
        return splitmix64(x.view(np.uint64))
    if pa.types.is_temporal(t):
        width = t.bit_width
        ints = arr.view(pa.int64() if width == 64 else pa.int32())
        return splitmix64(ints.fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64))
    raise SchemaError(
        f"cannot hash a key column of type {t}: use int, float, bool, string/binary, temporal, decimal "
        "or dictionary keys"
    )


def _array_hash(arr: pa.Array) -> np.ndarray:
    if pa.types.is_temporal(arr.type) and arr.null_count:
        # fill_null with a typed zero is awkward for temporals; view as ints first
        arr = arr.view(pa.int64() if arr.type.bit_width == 64 else pa.int32())
    h = _values_as_uint64(arr)
    if arr.null_count:
        h = np.where(arr.is_null().to_numpy(zero_copy_only=False), NULL_HASH, h)
    return h


def column_hash(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """uint64 hash of every value of one column (chunk by chunk, concatenated)."""
    if isinstance(col, pa.Array):
        return _array_hash(col)
    if col.num_chunks == 0:
        return np.empty(0, dtype=np.uint64)
    if col.num_chunks == 1:
        return _array_hash(col.chunk(0))
    return np.concatenate([_array_hash(c) for c in col.chunks])


def hash_rows(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """uint64 hash of each row's values in ``columns`` (equal keys give equal hashes everywhere)."""
    h: np.ndarray | None = None
    for name in columns:
        hc = column_hash(table.column(name))
        if h is None:
            h = hc
        else:  # boost::hash_combine, 64-bit
            h ^= hc + _GOLDEN + (h << np.uint64(6)) + (h >> np.uint64(2))
    if h is None:
        return np.zeros(table.num_rows, dtype=np.uint64)
    return h


def partition_of(hashes: np.ndarray, num_partitions: int) -> np.ndarray:
    """Partition index in ``[0, num_partitions)`` of each hash (multiply-shift on the high 32 bits)."""
    hi = hashes >> np.uint64(32)
    hi *= np.uint64(num_partitions)
    hi >>= np.uint64(32)
    return hi.astype(np.int32 if num_partitions > 32767 else np.int16)
