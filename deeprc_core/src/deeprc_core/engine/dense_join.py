"""A local join on one dense integer key by direct addressing (a "perfect hash" join).

When the key is one integer column without nulls whose values span at most
:data:`MAX_SPAN_PER_ROW` times the build side's rows (ids, counters, the keys of Cylon's
join benchmark), a bucket per key value replaces a hash table: ``bincount`` sizes the
buckets, one sort of the build keys (packed with their row numbers) fills them, and every probe row finds its
matches by indexing. No hashing, no collision chains, and numpy's vectorised loops
instead of Acero's per-batch plan. Anything else (several keys, nulls, a sparse range,
an outer join) is left to Acero: :func:`dense_join_indices` returns None.

Only row indices are computed here; the caller takes the output columns with them, so
the output names and types are exactly those of the Acero path.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from .int_keys import int64_keys, packed_order

#: Largest key range (max - min + 1) per build row for which direct addressing is used.
MAX_SPAN_PER_ROW = 4
#: Below this many rows per side Acero is as fast, and the arrays here are not worth it.
MIN_ROWS = 4096


def _as_int64(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``keys`` as int64, and the mask of uint64 values beyond int64's range (None when there are none)."""
    if keys.dtype == np.uint64:
        beyond = keys > np.iinfo(np.int64).max
        if beyond.any():
            return keys.astype(np.int64), beyond  # those wrap: the caller must mask them
    return keys.astype(np.int64, copy=False), None


def dense_join_indices(
    probe: pa.ChunkedArray, build: pa.ChunkedArray, keep_unmatched: bool
) -> Iterator[tuple[np.ndarray, pa.Array]] | None:
    """Row indices ``(probe_rows, build_rows)`` of the equi-join of two key columns, or None if not dense.

    Yields them for one slice of :data:`PROBE_ROWS` probe rows at a time, so that the
    temporaries stay small whatever the size of the sides. Every probe row appears once
    per matching build row, in probe order; with ``keep_unmatched`` (a left join, probe on
    the left) a probe row without a match appears once with a null build index, so taking
    with it gives nulls.
    """
    if min(len(probe), len(build)) < max(MIN_ROWS, 1):  # an empty side has no range to address
        return None
    b = int64_keys(build)  # the key column only: a temporary of 8 bytes a row at most
    if b is None or not pa.types.is_integer(probe.type) or probe.null_count:
        return None
    lo, hi = int(b.min()), int(b.max())
    span = hi - lo + 1
    if span > MAX_SPAN_PER_ROW * len(b) or span >= 2**31:
        return None
    kb = (b - lo).astype(np.int32)
    del b
    counts = np.bincount(kb, minlength=span).astype(np.int32)  # rows of each key value (< 2**31 rows)
    # any order of equal keys will do: the join's row order is unspecified
    order = packed_order(kb, 0, span - 1)
    if order is None:  # key and row number need more than 63 bits
        order = np.argsort(kb)
    del kb
    starts = np.cumsum(counts, dtype=np.int32)  # in place from here: span-sized arrays are the big ones
    starts -= counts
    return _probe(probe, lo, hi, counts, starts, order, keep_unmatched)


#: Probe rows handled at a time (bounds the per-row temporaries to a few MiB).
PROBE_ROWS = 1 << 16


def _probe(
    probe: pa.ChunkedArray,
    lo: int,
    hi: int,
    counts: np.ndarray,
    starts: np.ndarray,
    order: np.ndarray,
    keep_unmatched: bool,
) -> Iterator[tuple[np.ndarray, pa.Array]]:
    offset = 0
    for chunk in probe.chunks:
        for at in range(0, len(chunk), PROBE_ROWS):
            keys, beyond = _as_int64(chunk.slice(at, PROBE_ROWS).to_numpy())
            kp = keys - lo
            outside = (kp < 0) | (kp > hi - lo)
            if beyond is not None:
                outside |= beyond  # above every build key (those fit int64): unmatched
            kp[outside] = 0
            c = counts[kp]
            c[outside] = 0
            emitted = np.maximum(c, 1) if keep_unmatched else c
            rows = np.repeat(np.arange(offset, offset + len(kp), dtype=np.int64), emitted)
            # the i-th output row of probe row r is build row order[starts[key r] + i]
            ends = np.cumsum(emitted)
            slot = np.repeat(starts[kp] - (ends - emitted), emitted) + np.arange(len(rows), dtype=np.int64)
            if keep_unmatched:
                matched = np.repeat(c > 0, emitted)
                slot[~matched] = 0
                yield rows, pa.array(order[slot], mask=~matched)
            else:
                yield rows, pa.array(order[slot])
            offset += len(kp)
