"""The samples of one rank's partition: checked columns, their views, windows, the NaN filter and global ids.

A :class:`SampleIndex` is what :class:`~deeprc_core.batches.TableBatches` cuts batches
from: sample ``s`` of the plan is row (or window start) ``valid[s]`` of the views (``s``
itself without a filter). It holds no plan and makes no batch; it is rebuilt for each epoch's
table under ``shuffle='global'``. :func:`check_sample_columns` is the collective-free check of
the columns that comes first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from .batch_settings import BatchSettings
from .copies import record_copy
from .errors import ZeroCopyError
from .stacking import ColumnStack
from .table import GlobalTable, check_columns
from .views import aligned_copy, column_view, is_aligned, pack_columns, sliding_windows
from .windows import Window, with_halo

#: The column of global row ids a global shuffle carries along (the rows move; their ids must not be lost)
ROW_ID = "__deeprc_row__"
#: Rows a NaN scan looks at per step: its temporaries stay small (a full-length mask is 1 byte a row)
_NAN_SCAN_ROWS = 1 << 16


class BatchArrays(NamedTuple):
    """This rank's data as the arrays a graph-side consumer cuts batches from (:meth:`TableBatches.arrays`).

    All arrays are C-contiguous, of the batches' dtype, and on the ``align`` boundary.
    ``x`` is either one array of rows (``stack_x`` False) or the feature columns, one
    1-D array each, that a batch stacks on axis 1 (``stack_x`` True, so that the table is
    never packed). ``y`` is one array of rows, or None. Without a window, sample row
    ``r`` is ``x[r]``/``y[r]``. With one, ``r`` is a window's first row: inputs are
    rows ``r .. r + input_len - 1`` of x, targets rows ``r + window.target_start`` on
    (``horizon`` of them) of y.
    """

    x: tuple[np.ndarray, ...]
    y: np.ndarray | None
    stack_x: bool
    window: Window | None


def column_names(cols: str | Sequence[str] | None) -> list[str]:
    """``cols`` as a list of names (None: none)."""
    if cols is None:
        return []
    return [cols] if isinstance(cols, str) else list(cols)


def _is_scalar_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def _rows_without_nan(y: np.ndarray) -> np.ndarray | None:
    """The rows of ``y`` with no NaN (an index), or None when every row is clean: scanned in pieces."""
    flat = y.reshape(len(y), int(np.prod(y.shape[1:])))  # -1 fails on 0 rows
    bad = [
        lo + np.flatnonzero(np.isnan(flat[lo : lo + _NAN_SCAN_ROWS]).any(axis=1))
        for lo in range(0, len(flat), _NAN_SCAN_ROWS)
    ]
    bad = [b for b in bad if len(b)]
    if not bad:
        return None
    keep = np.ones(len(flat), dtype=bool)
    keep[np.concatenate(bad)] = False
    return np.flatnonzero(keep)


def _nonfinite_count(col: pa.ChunkedArray) -> int:
    """NaN and +-inf values in a float column, or a fixed-size list of floats (0 for integers): one scan."""
    import pyarrow.compute as pc

    values = col
    while pa.types.is_fixed_size_list(values.type) or isinstance(values.type, pa.BaseExtensionType):
        if isinstance(values.type, pa.BaseExtensionType):
            values = pa.chunked_array([c.storage for c in values.chunks], values.type.storage_type)
        else:
            values = pa.chunked_array([c.flatten() for c in values.chunks], values.type.value_type)
    if not pa.types.is_floating(values.type) or len(values) == 0:
        return 0
    finite = 0
    for chunk in values.chunks:  # a slice at a time: the mask of a whole packed column is tens of MiB
        for at in range(0, len(chunk), _NAN_SCAN_ROWS * 16):
            finite += pc.sum(pc.is_finite(chunk.slice(at, _NAN_SCAN_ROWS * 16))).as_py() or 0
    return len(values) - values.null_count - int(finite)


def global_ids(rows: slice | np.ndarray, first: int, ids: np.ndarray | None, offset: int) -> np.ndarray:
    """Global sample ids of local samples ``rows``.

    ``first + rows`` for plain rows; ``offset + ids[rows]`` where ``ids`` maps samples to
    rows (window starts, local: ``offset`` is the partition's first global row; the row ids
    carried through a global shuffle, already global: ``offset`` is 0).
    """
    if isinstance(rows, slice):
        rows = np.arange(rows.start, rows.stop, dtype=np.int64)
    if ids is None:
        return first + rows
    return offset + ids[rows]


def _matrix(table: pa.Table, cols: str | Sequence[str], name: str, dtype: np.dtype, align: int | None) -> np.ndarray:
    """The local data of ``cols`` as one view: a single column directly, several packed once."""
    if isinstance(cols, str):
        view = column_view(table, cols, copy=table.column(cols).num_chunks > 1)
        if view.dtype != dtype:
            view = view.astype(dtype)
            record_copy("cast", view.nbytes, f"column {cols!r} to {dtype}")
        if align and not is_aligned(view, align):
            view = aligned_copy(view, align, "align")
        return view
    packed = pack_columns(table, cols, name=name, dtype=dtype, keep=[])
    return column_view(packed, name)


def check_sample_columns(
    source: GlobalTable,
    features: str | Sequence[str],
    target: str | Sequence[str] | None,
    settings: BatchSettings,
    what: str,
) -> None:
    """Refuse columns batches cannot be made of, on this rank (the caller agrees the outcome across ranks)."""
    names = column_names(features) + column_names(target)
    if not column_names(features):
        raise ValueError(f"{what}: features must name at least one column")
    check_columns(source.local, names, what)
    for c in names:
        t = source.local.schema.field(c).type
        ok = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_fixed_size_list(t)
        ok = ok or (isinstance(t, pa.BaseExtensionType) and t.extension_name == "arrow.fixed_shape_tensor")
        if not ok:
            raise ZeroCopyError(
                f"{what}: column {c!r} has type {t}; features and targets must be numeric "
                "(encode strings/categories/timestamps into numbers first, e.g. with GlobalTable.with_column)"
            )
        col = source.local.column(c)
        if col.null_count and not (c in column_names(target) and settings.dropna_target and pa.types.is_floating(t)):
            raise ZeroCopyError(
                f"{what}: column {c!r} has {col.null_count} null(s) on rank {source.rank}; "
                "fill or drop them first (pyarrow.compute.fill_null, GlobalTable.filter)"
            )
    for c in column_names(features):
        bad = _nonfinite_count(source.local.column(c))
        if bad:
            raise ValueError(
                f"{what}: feature column {c!r} has {bad} NaN/inf value(s) on rank {source.rank} "
                f"(of {source.local_num_rows} rows); they would train to loss=nan. Fill them, or drop "
                f"those rows first: table.filter(pyarrow.compute.is_finite(table.local.column({c!r})))"
            )
    w = settings.window
    if w is not None and w.group is not None:
        check_columns(source.local, [w.group], f"{what} window group")
    if w is not None and source.num_rows < w.span:
        raise ValueError(
            f"{what}: a window needs {w.span} rows (input_len {w.input_len} + "
            f"targets), but the global table has only {source.num_rows}"
        )


def _fill_target_nulls(local: pa.Table, target: str | Sequence[str] | None) -> pa.Table:
    """Nulls in a float target become NaN (then skipped by dropna_target)."""
    for c in column_names(target):
        col = local.column(c)
        if col.null_count and pa.types.is_floating(col.type):
            import pyarrow.compute as pc

            local = local.set_column(local.column_names.index(c), c, pc.fill_null(col, float("nan")))
            record_copy("fill-null", col.nbytes, f"target column {c!r}")
    return local


class SampleIndex:
    """The samples of ``table``'s partition (checked by :func:`check_sample_columns`) and the views they are read from.

    ``num_samples`` samples; ``valid`` maps them to rows of the views when ``dropna_target``
    or a window's ``group`` skipped some (None: sample ``s`` is row ``s``); with a window,
    ``starts`` maps rows of the views to the first local row of each window.
    """

    def __init__(
        self,
        table: GlobalTable,
        features: str | Sequence[str],
        target: str | Sequence[str] | None,
        settings: BatchSettings,
        align: int | None,
    ) -> None:
        self.table = table
        self.features, self.target = features, target
        self.window = w = settings.window
        self.dtype = settings.dtype
        self.align = align
        local = table.local if w is None else with_halo(table, w.span - 1)
        local = _fill_target_nulls(local, target)
        # x of a list of columns is packed only when a numpy batch needs it (arrays() serves the columns as they are)
        self._x_table = local
        self._x_base: np.ndarray | None = None
        self._x_view: np.ndarray | None = None
        self._x_cols: ColumnStack | None = None
        self._no_x_cols = False
        self._arrays: BatchArrays | None = None
        if isinstance(features, str):
            self._x_base = _matrix(local, features, "__x__", self.dtype, align)
        y = None if target is None else _matrix(local, target, "__y__", self.dtype, align)
        #: the partition's first global row
        self.first = table.row_offset
        #: the window's first row within the partition, and the windows that start here (with a window)
        self.window_first, self.n_starts = 0, 0
        self.y_base: np.ndarray | None = None
        if w is None:
            #: samples of y: rows, or (with a window) zero-copy windows over the rows
            self.y = y
            #: rows of the views the samples are (None: all of them)
            self.valid: np.ndarray | None = None
            if y is not None and settings.dropna_target:
                self.valid = _rows_without_nan(y)
            #: global row of each row, carried through a global shuffle (None: ``first + row``)
            self.ids = local.column(ROW_ID).to_numpy() if ROW_ID in local.column_names else None
            #: the first local row of each window (None without a window)
            self.starts: np.ndarray | None = None
            #: samples before the NaN filter, and windows the filter skipped
            self.n_candidates, self.nan_windows = table.local_num_rows, 0
            self.num_samples = table.local_num_rows if self.valid is None else len(self.valid)
            return
        # Candidate windows start at global rows that are multiples of the stride.
        first = (-table.row_offset) % w.stride
        n_starts = 0
        if table.local_num_rows > first:
            n_starts = (table.local_num_rows - 1 - first) // w.stride + 1
        last_needed = first + (n_starts - 1) * w.stride + w.span if n_starts else 0
        if last_needed > local.num_rows:  # windows that would run past the end of the table
            n_starts = max(0, (local.num_rows - w.span - first) // w.stride + 1)
        self.window_first, self.n_starts = first, n_starts
        y2 = None if y is None else (y.reshape(len(y), 1) if y.ndim == 1 else y)
        self.y_base = y2
        self.y = None if y2 is None else sliding_windows(y2[first + w.target_start :], w.horizon, w.stride)[:n_starts]
        starts = first + np.arange(n_starts, dtype=np.int64) * w.stride
        keep = np.ones(n_starts, dtype=bool)
        if w.group is not None and n_starts:
            g = local.column(w.group).to_numpy()  # ChunkedArray.to_numpy takes no arguments on pyarrow < 13
            keep &= g[starts] == g[starts + w.span - 1]
        self.nan_windows = 0
        if self.y is not None and settings.dropna_target and n_starts:
            clean = ~np.isnan(self.y.reshape(n_starts, -1)).any(axis=1)
            self.nan_windows = int(np.count_nonzero(keep & ~clean))
            keep &= clean
        self.valid = None if keep.all() else np.flatnonzero(keep)
        self.n_candidates = n_starts
        self.ids = None
        self.starts = starts
        self.num_samples = n_starts if self.valid is None else len(self.valid)

    def packed_x(self) -> np.ndarray:
        """The local features as one array of rows (a list of columns is packed here, once, counted)."""
        if self._x_base is None:
            self._x_base = _matrix(self._x_table, self.features, "__x__", self.dtype, self.align)
        return self._x_base

    @property
    def x(self) -> np.ndarray:
        """Samples of x: rows, or (with a window) zero-copy windows over the rows."""
        if self._x_view is None:
            base = self.packed_x()
            w = self.window
            if w is None:
                self._x_view = base
            else:
                x2 = base.reshape(len(base), 1) if base.ndim == 1 else base
                self._x_view = sliding_windows(x2[self.window_first :], w.input_len, w.stride)[: self.n_starts]
        return self._x_view

    def x_columns(self) -> ColumnStack | None:
        """The stacker of x's per-column sample views when x is a list of scalar columns, else None.

        Batches are stacked from these (one copy of the batch): the table is never packed.
        With a window each view is the column's zero-copy windows, ``(samples, input_len)``.
        """
        if self._x_cols is None and not self._no_x_cols:
            arrays = self.arrays()
            w = self.window
            if not arrays.stack_x:
                self._no_x_cols = True
                return None
            if w is None:
                views = list(arrays.x)
            else:
                views = [
                    sliding_windows(c[self.window_first :], w.input_len, w.stride)[: self.n_starts] for c in arrays.x
                ]
            self._x_cols = ColumnStack(views)
        return self._x_cols

    @property
    def sample_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        """Shape of one sample of x, and of y (None without a target)."""
        if self._x_base is None:  # a list of scalar columns, not packed (yet)
            row: tuple[int, ...] = (len(column_names(self.features)),)
        else:
            row = tuple(self._x_base.shape[1:])
        x_shape = row if self.window is None else (self.window.input_len, *(row or (1,)))
        return x_shape, None if self.y is None else tuple(self.y.shape[1:])

    def arrays(self) -> BatchArrays:
        """This rank's data as the arrays batches are cut from (see :class:`BatchArrays`)."""
        if self._arrays is None:
            names = column_names(self.features)
            stack = not isinstance(self.features, str) and all(
                _is_scalar_numeric(self._x_table.schema.field(c).type) for c in names
            )
            if stack:
                x: tuple[np.ndarray, ...] = tuple(
                    _matrix(self._x_table, c, "__x__", self.dtype, self.align) for c in names
                )
            else:
                base = self.packed_x()
                x = (base.reshape(len(base), 1) if self.window is not None and base.ndim == 1 else base,)
            y = self.y if self.window is None else self.y_base
            self._arrays = BatchArrays(x, y, stack, self.window)
        return self._arrays

    @property
    def gather_reason(self) -> str:
        """The copy-counter reason of a gathered batch: of windows, or of rows."""
        return "window-gather" if self.window is not None else "gather"

    def sample_rows(self, samples: slice | np.ndarray, padded: np.ndarray | None) -> slice | np.ndarray:
        """Rows of the sample views for planned ``samples``: a slice, or an index (sorted unless padded)."""
        if self.valid is not None:
            samples = self.valid[samples]
        if isinstance(samples, slice):
            return samples
        return np.sort(samples) if padded is None else samples  # sorted reads are faster; order is free

    def global_ids(self, rows: slice | np.ndarray) -> np.ndarray:
        """Global sample ids of rows of the views (the global row, or a window's first global row)."""
        return global_ids(rows, self.first, self.ids, 0)
