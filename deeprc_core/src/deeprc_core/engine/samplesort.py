"""Distributed sort by regular sampling (Cylon's scheme), stable and balanced.

1. every rank sorts its partition (stable indices + ``take``: Arrow's ``sort_indices``, or
   for one integer key one ``np.sort`` of packed (key, row) words, :mod:`.int_keys`);
2. it picks regular samples of its sorted rows, each tagged with (rank, row) and a
   weight (its share of the rank's rows);
3. the samples are allgathered and every rank picks the same P-1 splitters at equal
   cumulative weight;
4. each rank cuts its sorted rows at the splitters by binary search and one all-to-all
   moves the runs; the receiver concatenates them by source rank and sorts stably.

Ties are broken by the original global position (source rank, then row), so the
splitters form a strict order: equal keys keep their input order (a stable sort) and
a hot key is spread over ranks instead of landing on one. Nulls sort last, after NaNs,
whatever the direction (Arrow's default null placement, "at_end").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..comm.base import Communicator
from ..exchange import exchange_tables
from . import int_keys
from .partition import bounded_batches, concat_same_schema

#: Samples per rank and per destination rank (more samples, better balance).
OVERSAMPLE = 8


def sort_keys(by: Sequence[str], ascending: bool | Sequence[bool]) -> list[tuple[str, str]]:
    """Arrow sort keys ``(column, order)`` for ``by`` and ``ascending`` (one flag or one per column).

    Two-element keys work on every pyarrow (per-key null placement needs pyarrow >= 17)
    and leave nulls at Arrow's default place, the end, whatever the direction.
    """
    flags = [bool(ascending)] * len(by) if isinstance(ascending, bool) else [bool(a) for a in ascending]
    if len(flags) != len(by):
        raise ValueError(f"sort: {len(by)} columns but {len(flags)} ascending flags")
    return [(c, "ascending" if a else "descending") for c, a in zip(by, flags)]


def stable_order(table: pa.Table, keys: list[tuple[str, str]]) -> pa.Array:
    """Stable sort indices (nulls last): packed integer keys where they fit (:mod:`.int_keys`), else Arrow's."""
    fast = int_keys.sort_indices(table, keys)
    return pa.array(fast) if fast is not None else pc.sort_indices(table, sort_keys=keys)


def local_sort(table: pa.Table, keys: list[tuple[str, str]]) -> pa.Table:
    """Stable local sort (nulls last)."""
    if table.num_rows <= 1:
        return table
    return table.take(stable_order(table, keys))


def _category(v: Any) -> int:
    """0 for a value, 1 for NaN, 2 for null: NaN and null sort last in either direction."""
    if v is None:
        return 2
    if isinstance(v, float) and math.isnan(v):
        return 1
    return 0


def compare_rows(a: Sequence[Any], b: Sequence[Any], descending: Sequence[bool]) -> int:
    """Three-way comparison of two sort tuples (keys..., rank, row) in the sort's order."""
    for i, (x, y) in enumerate(zip(a, b)):
        cx, cy = _category(x), _category(y)
        if cx != cy:
            return -1 if cx < cy else 1
        if cx or x == y:
            continue
        less = x < y
        if i < len(descending) and descending[i]:
            less = not less
        return -1 if less else 1
    return 0


def _row_tuple(cols: list[pa.ChunkedArray], i: int, rank: int, orig: np.ndarray) -> tuple[Any, ...]:
    return (*(c[i].as_py() for c in cols), rank, int(orig[i]))


def choose_splitters(
    samples: list[tuple[tuple[Any, ...], float]], parts: int, descending: Sequence[bool]
) -> list[tuple[Any, ...]]:
    """``parts - 1`` splitters at equal cumulative weight of the (sample, weight) pairs."""
    if not samples or parts <= 1:
        return []
    key = functools.cmp_to_key(lambda s, t: compare_rows(s[0], t[0], descending))  # type: ignore[index]
    ordered = sorted(samples, key=key)
    cum = np.cumsum([w for _, w in ordered])
    total = float(cum[-1])
    out = []
    for k in range(1, parts):
        j = int(np.searchsorted(cum, total * k / parts, side="left"))
        out.append(ordered[min(j, len(ordered) - 1)][0])
    return out


def _upper_bound(
    cols: list[pa.ChunkedArray], n: int, rank: int, orig: np.ndarray, splitter: tuple[Any, ...], desc: Sequence[bool]
) -> int:
    """First row (of the locally sorted rows) that sorts after ``splitter``."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if compare_rows(_row_tuple(cols, mid, rank, orig), splitter, desc) <= 0:
            lo = mid + 1
        else:
            hi = mid
    return lo


def sample_sort(table: pa.Table, by: Sequence[str], ascending: bool | Sequence[bool], comm: Communicator) -> pa.Table:
    """The built-in engine's distributed sort of this rank's partition (collective)."""
    keys = sort_keys(by, ascending)
    p, me = comm.size, comm.rank
    if p == 1:
        return local_sort(table, keys)
    desc = [k[1] == "descending" for k in keys]
    n = table.num_rows
    if n > 1:
        idx = stable_order(table, keys)
        orig = idx.to_numpy()
        ordered = table.take(idx)
        del idx
    else:
        orig = np.arange(n)
        ordered = table
    cols = [ordered.column(c) for c in by]
    s = min(n, OVERSAMPLE * p)
    positions = [((2 * j + 1) * n) // (2 * s) for j in range(s)]
    mine = [(_row_tuple(cols, i, me, orig), n / s) for i in positions]
    samples = [x for part in comm.allgather(mine) for x in part]
    splitters = choose_splitters(samples, p, desc)
    inner = [_upper_bound(cols, n, me, orig, sp, desc) for sp in splitters] if splitters else [n] * (p - 1)
    cuts = [0, *inner, n]
    cuts = list(np.maximum.accumulate(cuts))
    parts = [bounded_batches(ordered.slice(cuts[d], cuts[d + 1] - cuts[d])) for d in range(p)]
    del cols
    received = exchange_tables(parts, comm, "sort")
    del parts, ordered
    merged = concat_same_schema(received, table.schema)
    del received
    return local_sort(merged, keys)
