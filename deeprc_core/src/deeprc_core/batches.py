"""TableBatches: the one batch source both framework adapters wrap.

Given a :class:`GlobalTable`, feature and target columns and a batch size, it agrees a
:class:`~deeprc_core.plan.BatchPlan` across ranks and yields :class:`Batch` objects of
numpy views. deeprc-torch turns them into tensors with ``torch.from_dlpack``;
deeprc-tf into ``tf.Tensor`` with DLPack (aligned) — nothing else.

Shapes (``B`` = batch size, ``F`` = features, ``T`` = targets):

==========================  ==============================  ===========================
features / target           x                               y
==========================  ==============================  ===========================
one numeric column          ``(B,)``                        ``(B,)``
one fixed-size-list column  ``(B, F)``                      ``(B, T)``
a list of columns           ``(B, F)`` (stacked per group)  ``(B, T)`` (packed once)
with ``window``             ``(B, input_len, F)``           ``(B, horizon, T)``
==========================  ==============================  ===========================

Copies: none for unshuffled batches of a single (or packed ``fixed_size_list``) column; a
list of scalar feature columns is stacked from the column views, one copy per group of about
``STACK_BYTES`` (``stack``; each batch a view of its group, never a copy of the table; by the
compiled kernel of :mod:`deeprc_core.stacking` where it is built); a shuffled batch is one gather of that batch only; a dtype cast or a
chunked column is one copy of that column at setup (``cast``, ``combine``); a global
shuffle moves the table once per epoch. All are counted in :func:`deeprc_core.copy_stats`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from .comm import agree
from .copies import record_copy
from .errors import DeepRCError, SchemaError, ZeroCopyError
from .plan import (
    BatchPlan,
    EvenPolicy,
    PlannedBatch,
    check_shuffle_with_window,
    epoch_number,
    normalize_shuffle,
    positive_int,
)
from .stacking import ColumnStack, Pending, StackAhead
from .table import GlobalTable, check_columns
from .views import aligned_copy, column_view, is_aligned, pack_columns, sliding_windows, take_rows
from .windows import Window, window_bounds, with_halo

ROW_ID = "__deeprc_row__"
#: Bytes of features one copy stacks from separate columns: that many batches' worth at once (at
#: least one batch), so the per-call cost is paid per group and a shuffled group's reads overlap
STACK_BYTES = 256 * 1024
#: The same when the kernel's thread stacks ahead (larger groups: fewer jobs handed over per epoch)
STACK_BYTES_AHEAD = 1024 * 1024
#: Native threads that gather ahead (shuffled batches): two, where this process may run on two cores (a
#: gather is bound by memory latency, and two cores keep twice the reads in flight); consecutive rows use one
STACK_THREADS = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Group(NamedTuple):
    """Consecutive planned batches that one copy stacks: their numbers, padding masks and sample rows.

    ``whole`` is the group's rows in one slice or index; ``gather`` is that index again when
    the rows are not consecutive (y must be gathered), None when they are (y are views).
    ``padded`` is None when no batch of the group repeats samples.
    """

    numbers: Sequence[int]
    padded: list[np.ndarray | None] | None
    rows: list[slice | np.ndarray]
    whole: slice | np.ndarray
    gather: np.ndarray | None


class StackedGroup(NamedTuple):
    """Consecutive batches stacked in one copy (:meth:`TableBatches.stacked_groups`).

    Batch ``k`` of the group is number ``numbers[k]``, sample rows ``rows[k]`` (a slice or
    an index), padding mask ``padded[k]`` (``padded`` is None when no batch repeats samples);
    its x and y are the next ``len(rows[k])`` rows of ``x`` and ``y`` (``y`` None without a target).
    """

    numbers: Sequence[int]
    padded: list[np.ndarray | None] | None
    rows: list[slice | np.ndarray]
    x: np.ndarray
    y: np.ndarray | None


class Batch:
    """One batch: inputs, targets and which global samples they are.

    ``index`` (the global sample ids) is computed on first access: the zero-copy path
    does not pay for it when nobody asks.
    """

    __slots__ = ("x", "y", "padded", "number", "epoch", "_index", "_make_index")

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray | None,
        index: np.ndarray | Callable[[], np.ndarray],
        padded: np.ndarray | None,
        number: int,
        epoch: int,
    ) -> None:
        #: inputs
        self.x = x
        #: targets, or None
        self.y = y
        #: mask of samples repeated by even='pad', or None
        self.padded = padded
        #: batch number within the epoch
        self.number = number
        #: epoch of the plan this batch belongs to
        self.epoch = epoch
        self._index: np.ndarray | None = None if callable(index) else index
        self._make_index = index if callable(index) else None

    @property
    def index(self) -> np.ndarray:
        """Global sample ids (the global row, or a window's first global row)."""
        if self._index is None:
            assert self._make_index is not None
            self._index = self._make_index()
        return self._index

    def __repr__(self) -> str:
        return f"Batch(epoch={self.epoch}, number={self.number}, x={self.x.shape}, y={None if self.y is None else self.y.shape})"


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


class EpochRows(NamedTuple):
    """One epoch of the plan as rows of :class:`BatchArrays` (:meth:`TableBatches.epoch_rows`).

    Batch ``first + b`` is positions ``bounds[b]:bounds[b+1]``: rows ``rows[lo:hi]``, or, when
    ``rows`` is None (no shuffle, padding or filtering), the rows ``lo .. hi - 1``
    themselves. ``padded`` marks the positions that repeat earlier samples (even='pad').
    """

    epoch: int
    rows: np.ndarray | None
    bounds: np.ndarray
    padded: np.ndarray | None
    #: the epoch's batch number of the first batch here (:meth:`TableBatches.epoch_rows` of a range)
    first: int = 0


def _is_scalar_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def _sort_batches(samples: np.ndarray, bounds: np.ndarray, padded: np.ndarray | None, batch_size: int) -> None:
    """Sort, in place, the samples of every batch without padding (sorted reads are faster; order within a batch is free)."""
    clean_until = len(samples) if padded is None or not padded.any() else int(np.argmax(padded))
    full = min(clean_until, int(bounds[-1])) // batch_size  # leading whole batches without padding
    samples[: full * batch_size].reshape(full, batch_size).sort(axis=1)
    for b in range(full, len(bounds) - 1):
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        if hi <= clean_until:
            samples[lo:hi].sort()


#: Rows a NaN scan looks at per step: its temporaries stay small (a full-length mask is 1 byte a row)
_NAN_SCAN_ROWS = 1 << 16


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
    finite = pc.sum(pc.is_finite(values)).as_py() or 0
    return len(values) - values.null_count - int(finite)


def _global_ids(rows: slice | np.ndarray, first: int, ids: np.ndarray | None, offset: int) -> np.ndarray:
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


def _as_names(cols: str | Sequence[str] | None) -> list[str]:
    if cols is None:
        return []
    return [cols] if isinstance(cols, str) else list(cols)


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


class TableBatches:
    """Agreed, resumable batches of (x, y) views over a GlobalTable (collective to build).

    Parameters mirror the adapters': ``shuffle`` is False/True (= ``"local"``) or
    ``"global"``; ``even`` is ``"drop"``, ``"pad"`` or ``"rebalance"`` (see
    :mod:`deeprc_core.plan`); ``window`` is a :class:`~deeprc_core.windows.Window` or
    ``(input_len, horizon[, stride])``; ``dropna_target`` skips windows/rows whose
    target is NaN (e.g. missing streamflow); ``align`` makes every batch start on that
    byte boundary (64 for TensorFlow), copying (counted) only where it must;
    ``stack_ahead`` is how many groups of batches the kernel's native thread stacks ahead from
    separate feature columns (0: stack in the consuming thread).
    """

    def __init__(
        self,
        source: GlobalTable,
        features: str | Sequence[str],
        target: str | Sequence[str] | None,
        batch_size: int,
        *,
        shuffle: bool | str = False,
        seed: int = 0,
        even: EvenPolicy = "auto",
        drop_last: bool = False,
        window: Window | Sequence[int] | dict[str, Any] | None = None,
        dropna_target: bool = True,
        dtype: Any = np.float32,
        align: int | None = None,
        stack_ahead: int = 2,
        what: str = "dataset",
    ) -> None:
        self.comm = source.comm
        #: groups of batches the kernel's thread stacks ahead from separate columns (0: in the consuming thread)
        self.stack_ahead = max(0, int(stack_ahead))
        self.batch_size = positive_int(batch_size, "batch_size", what)
        self.shuffle = normalize_shuffle(shuffle)
        self.seed = int(seed)
        self.window = Window.coerce(window)
        self.dtype = np.dtype(dtype)
        self.align = align
        self.what = what
        self.features, self.target = features, target
        self.dropna_target = dropna_target
        check_shuffle_with_window(self.shuffle, self.window, what)
        err: Exception | None = None
        try:
            self._validate(source)
        except (SchemaError, ZeroCopyError, ValueError) as exc:
            err = exc
        agree(self.comm, err, f"{what} setup")
        #: the policy in force: ``even``, with ``"auto"`` resolved to ``"drop"`` or ``"rebalance"``
        self.even: EvenPolicy = even
        self._drop_last = drop_last
        if even == "rebalance":
            source = self._rebalanced(source)
        self._base = source
        self._shuffled_epoch: int | None = None
        if self.shuffle == "global":  # its exchange leaves the rows balanced already
            self._base = source.with_column(ROW_ID, pa.array(np.arange(source.local_num_rows) + source.row_offset))
            self._load(self._base.global_shuffle(self.seed, 0))
            self._shuffled_epoch = 0
        else:
            self._load(source)
        if even == "auto":
            self.even = "drop"
            plan = self._make_plan() if self.shuffle == "global" else self._auto_plan()
            if plan is None:  # 'drop' would skip samples that moving rows keeps
                self.even = "rebalance"
                self._base = self._rebalanced(source)
                self._load(self._base)
                plan = self._make_plan()
        else:
            plan = self._make_plan()
        self.plan = plan
        self._count_nan_targets()  # of the table the plan is over: one collective

    def _make_plan(self) -> BatchPlan:
        return BatchPlan(
            self.num_samples,
            self.batch_size,
            self.comm,
            even="pad" if self.even == "pad" else "drop",
            shuffle="local" if self.shuffle == "local" else False,
            seed=self.seed,
            drop_last=self._drop_last,
            what=self.what,
        )

    def _auto_plan(self) -> BatchPlan | None:
        """The 'drop' plan when it skips at most one sample per rank, else None (rebalance instead).

        The counts are agreed, so every rank returns alike.
        """
        try:
            plan = self._make_plan()
        except DeepRCError:  # a rank could not fill one batch
            return None
        return plan if plan.dropped_total <= self.comm.size else None

    def _rebalanced(self, source: GlobalTable) -> GlobalTable:
        """``source`` with equal shares of samples on every rank: rows, or window starts with a window."""
        if self.window is None:
            return source.rebalance()
        return source.rebalance(window_bounds(source.num_rows, source.world_size, self.window))

    def _count_nan_targets(self) -> None:
        """Agree how many samples ``dropna_target`` skips (reported by :func:`deeprc_core.adapter.warn_plan`)."""
        if self.target is None:
            self.nan_target_skipped = 0
            return
        local = self._nan_windows if self.window is not None else self._n_candidates - self.num_samples
        #: samples skipped on all ranks because their target is NaN (dropna_target)
        self.nan_target_skipped = int(self.comm.allreduce_int([local])[0])

    # ---------------------------------------------------------------- setup
    def _validate(self, source: GlobalTable) -> None:
        names = _as_names(self.features) + _as_names(self.target)
        if not _as_names(self.features):
            raise ValueError(f"{self.what}: features must name at least one column")
        check_columns(source.local, names, self.what)
        for c in names:
            t = source.local.schema.field(c).type
            ok = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_fixed_size_list(t)
            ok = ok or (isinstance(t, pa.BaseExtensionType) and t.extension_name == "arrow.fixed_shape_tensor")
            if not ok:
                raise ZeroCopyError(
                    f"{self.what}: column {c!r} has type {t}; features and targets must be numeric "
                    "(encode strings/categories/timestamps into numbers first, e.g. with GlobalTable.with_column)"
                )
            col = source.local.column(c)
            if col.null_count and not (c in _as_names(self.target) and self.dropna_target and pa.types.is_floating(t)):
                raise ZeroCopyError(
                    f"{self.what}: column {c!r} has {col.null_count} null(s) on rank {source.rank}; "
                    "fill or drop them first (pyarrow.compute.fill_null, GlobalTable.filter)"
                )
        for c in _as_names(self.features):
            bad = _nonfinite_count(source.local.column(c))
            if bad:
                raise ValueError(
                    f"{self.what}: feature column {c!r} has {bad} NaN/inf value(s) on rank {source.rank} "
                    f"(of {source.local_num_rows} rows); they would train to loss=nan. Fill them, or drop "
                    f"those rows first: table.filter(pyarrow.compute.is_finite(table.local.column({c!r})))"
                )
        if self.window is not None and self.window.group is not None:
            check_columns(source.local, [self.window.group], f"{self.what} window group")
        if self.window is not None and source.num_rows < self.window.span:
            raise ValueError(
                f"{self.what}: a window needs {self.window.span} rows (input_len {self.window.input_len} + "
                f"targets), but the global table has only {source.num_rows}"
            )

    def _load(self, table: GlobalTable) -> None:
        """Build the views for this table (after a global shuffle, for the new epoch)."""
        self.table = table
        local = table.local
        w = self.window
        if w is not None:
            local = with_halo(table, w.span - 1)
        local = self._fill_target_nulls(local)
        # x of a list of columns is packed only when a numpy batch needs it (arrays() serves the columns as they are)
        self._x_table = local
        self._x_base: np.ndarray | None = None
        self._x_view: np.ndarray | None = None
        self._x_cols: ColumnStack | None = None
        self._no_x_cols = False
        self._arrays: BatchArrays | None = None
        if isinstance(self.features, str):
            self._x_base = _matrix(local, self.features, "__x__", self.dtype, self.align)
        y = None if self.target is None else _matrix(local, self.target, "__y__", self.dtype, self.align)
        self._first = table.row_offset
        if w is None:
            self._y = y
            self._valid: np.ndarray | None = None
            if y is not None and self.dropna_target:
                self._valid = _rows_without_nan(y)
            self._ids = local.column(ROW_ID).to_numpy() if ROW_ID in local.column_names else None
            self._starts: np.ndarray | None = None
            self.num_samples = table.local_num_rows if self._valid is None else len(self._valid)
            self._n_candidates = table.local_num_rows
            self._nan_windows = 0
            return
        # Candidate windows start at global rows that are multiples of the stride.
        first = (-table.row_offset) % w.stride
        n_starts = 0
        if table.local_num_rows > first:
            n_starts = (table.local_num_rows - 1 - first) // w.stride + 1
        last_needed = first + (n_starts - 1) * w.stride + w.span if n_starts else 0
        if last_needed > local.num_rows:  # windows that would run past the end of the table
            n_starts = max(0, (local.num_rows - w.span - first) // w.stride + 1)
        self._window_first, self._n_starts = first, n_starts
        y2 = None if y is None else (y.reshape(len(y), 1) if y.ndim == 1 else y)
        self._y_base = y2
        self._y = None if y2 is None else sliding_windows(y2[first + w.target_start :], w.horizon, w.stride)[:n_starts]
        starts = first + np.arange(n_starts, dtype=np.int64) * w.stride
        keep = np.ones(n_starts, dtype=bool)
        if w.group is not None and n_starts:
            g = local.column(w.group).to_numpy()  # ChunkedArray.to_numpy takes no arguments on pyarrow < 13
            keep &= g[starts] == g[starts + w.span - 1]
        self._nan_windows = 0
        if self._y is not None and self.dropna_target and n_starts:
            clean = ~np.isnan(self._y.reshape(n_starts, -1)).any(axis=1)
            self._nan_windows = int(np.count_nonzero(keep & ~clean))
            keep &= clean
        self._valid = None if keep.all() else np.flatnonzero(keep)
        self._n_candidates = n_starts
        self._ids = None
        self._starts = starts
        self.num_samples = n_starts if self._valid is None else len(self._valid)

    def _packed_x(self) -> np.ndarray:
        """The local features as one array of rows (a list of columns is packed here, once, counted)."""
        if self._x_base is None:
            self._x_base = _matrix(self._x_table, self.features, "__x__", self.dtype, self.align)
        return self._x_base

    @property
    def _x(self) -> np.ndarray:
        """Samples of x: rows, or (with a window) zero-copy windows over the rows."""
        if self._x_view is None:
            base = self._packed_x()
            w = self.window
            if w is None:
                self._x_view = base
            else:
                x2 = base.reshape(len(base), 1) if base.ndim == 1 else base
                self._x_view = sliding_windows(x2[self._window_first :], w.input_len, w.stride)[: self._n_starts]
        return self._x_view

    def _x_columns(self) -> ColumnStack | None:
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
                    sliding_windows(c[self._window_first :], w.input_len, w.stride)[: self._n_starts] for c in arrays.x
                ]
            self._x_cols = ColumnStack(views)
        return self._x_cols

    def _fill_target_nulls(self, local: pa.Table) -> pa.Table:
        """Nulls in a float target become NaN (then skipped by dropna_target)."""
        for c in _as_names(self.target):
            col = local.column(c)
            if col.null_count and pa.types.is_floating(col.type):
                import pyarrow.compute as pc

                local = local.set_column(local.column_names.index(c), c, pc.fill_null(col, float("nan")))
                record_copy("fill-null", col.nbytes, f"target column {c!r}")
        return local

    # ------------------------------------------------------------ iteration
    @property
    def num_batches(self) -> int:
        """Batches every rank runs per epoch (agreed)."""
        return self.plan.num_batches

    def __len__(self) -> int:
        return self.plan.num_batches

    @property
    def sample_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        """Shape of one sample of x, and of y (None without a target)."""
        if self._x_base is None:  # a list of scalar columns, not packed (yet)
            row: tuple[int, ...] = (len(_as_names(self.features)),)
        else:
            row = tuple(self._x_base.shape[1:])
        x_shape = row if self.window is None else (self.window.input_len, *(row or (1,)))
        return x_shape, None if self._y is None else tuple(self._y.shape[1:])

    # ------------------------------------------- index form (graph-side consumers)
    def arrays(self) -> BatchArrays:
        """This rank's data as the arrays batches are cut from (see :class:`BatchArrays`).

        A list of scalar feature columns comes back column by column, not packed: a
        consumer that stacks per batch (deeprc-tf) never copies the table. Call
        :meth:`prepare_epoch` first under ``shuffle='global'`` (the arrays change per epoch).
        """
        if self._arrays is None:
            names = _as_names(self.features)
            stack = not isinstance(self.features, str) and all(
                _is_scalar_numeric(self._x_table.schema.field(c).type) for c in names
            )
            if stack:
                x: tuple[np.ndarray, ...] = tuple(
                    _matrix(self._x_table, c, "__x__", self.dtype, self.align) for c in names
                )
            else:
                base = self._packed_x()
                x = (base.reshape(len(base), 1) if self.window is not None and base.ndim == 1 else base,)
            y = self._y if self.window is None else self._y_base
            self._arrays = BatchArrays(x, y, stack, self.window)
        return self._arrays

    def epoch_rows(self, epoch: int, first: int = 0, last: int | None = None) -> EpochRows:
        """The plan of batches ``first .. last - 1`` of ``epoch`` (default: all) as rows of :meth:`arrays`, at once.

        The same batches, in the same order, with the same samples as :meth:`epoch`
        (rows sorted within each batch that has no padding); collective for
        shuffle='global'. A range holds only its own rows: adapters that need an epoch's
        rows as one index take it a range at a time, so a shuffled epoch is never held whole.
        """
        self.prepare_epoch(epoch)
        first, last = self.plan.batch_range(first, last)
        samples, padded = self.plan.epoch_samples(epoch, first, last)
        bounds = self.plan.bounds()[first : last + 1]
        bounds = bounds - bounds[0]
        if samples is None and self._valid is None and self._starts is None:
            return EpochRows(epoch, None, bounds, None, first)
        if samples is None:
            samples = np.arange(self.plan.samples_per_epoch, dtype=np.int64)
        else:
            _sort_batches(samples, bounds, padded, self.batch_size)
        rows = samples if self._valid is None else self._valid[samples]
        if self._starts is not None:
            rows = self._starts[rows]
        return EpochRows(epoch, rows, bounds, padded, first)

    @property
    def in_order(self) -> bool:
        """True when every epoch is consecutive rows in order (:attr:`EpochRows.rows` is None): batches are slices."""
        return (
            self.shuffle == "none" and self.window is None and self._valid is None and self.plan.padded_per_epoch == 0
        )

    def global_ids(self, rows: slice | np.ndarray) -> np.ndarray:
        """Global sample ids of rows of :meth:`arrays` (the global row, or a window's first global row)."""
        return _global_ids(rows, self._first, self._ids, 0)

    def prepare_epoch(self, epoch: int) -> None:
        """Do the collective work of ``epoch`` now (the global reshuffle), without iterating.

        Adapters call it in the main process so that no collective runs inside a
        DataLoader worker; for other shuffle modes it does nothing.
        """
        epoch = epoch_number(epoch, self.what)
        if self.shuffle == "global" and self._shuffled_epoch != epoch:
            self._load(self._base.global_shuffle(self.seed, epoch))
            self._shuffled_epoch = epoch

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` from batch ``start`` on (collective for shuffle='global')."""
        self.prepare_epoch(epoch)
        columns = self._x_columns()
        if columns is None or self.align:
            for p in self.plan.batches(epoch, start):
                yield self._batch(self._sample_rows(p.samples, p.padded), p.padded, p.number, epoch)
            return
        for group in self.stacked_groups(epoch, start):
            at = 0
            padded = group.padded or repeat(None)
            for number, pad, r in zip(group.numbers, padded, group.rows):
                n = r.stop - r.start if isinstance(r, slice) else len(r)
                y = None if group.y is None else group.y[at : at + n]
                yield self._batch(r, pad, number, epoch, x=group.x[at : at + n], y=y)
                at += n

    def group_size(self, group_bytes: int | None = None) -> int:
        """Batches per group of :meth:`stacked_groups` (``group_bytes`` of features; at least one batch)."""
        columns = self._x_columns()
        ahead = self.stack_ahead if columns is not None and columns.compiled else 0
        per_batch = self.batch_size * int(np.prod(self.sample_shapes[0])) * self.dtype.itemsize
        default = STACK_BYTES_AHEAD if ahead else STACK_BYTES
        return max(1, (group_bytes or default) // max(per_batch, 1))

    def stacked_groups(
        self, epoch: int = 0, start: int = 0, *, group_bytes: int | None = None, align: int | None = None
    ) -> Iterator[StackedGroup]:
        """The batches of ``epoch`` from batch ``start`` on, stacked from separate feature columns a group at a time.

        Each :class:`StackedGroup` is :meth:`group_size` consecutive batches in one copy of
        their rows (counted: ``stack``, or ``gather`` when shuffled), its x on ``align`` bytes
        when given; its batches are what :meth:`epoch` yields, in the same order. With the
        compiled kernel the copies run ``stack_ahead`` groups ahead in its native threads.
        Memory: a few groups. Only for features given as separate scalar columns.
        """
        self.prepare_epoch(epoch)
        columns = self._x_columns()
        if columns is None:
            raise ValueError(f"{self.what}: stacked_groups needs the features as separate scalar columns")
        # the per-call cost is paid once per group, not per batch; each batch is a view of its group. With the
        # compiled kernel the copies overlap the consumer's Python loop on another core.
        ahead = self.stack_ahead if columns.compiled else 0
        group_size = self.group_size(group_bytes)
        # Consecutive rows: one thread outruns the loop (a second only takes the loop's core); gathers wait on
        # memory, and STACK_THREADS keep more reads in flight.
        if self.plan.shuffle != "local" and self._valid is None and self.plan.padded_per_epoch == 0:
            todo: Iterator[_Group] = self._consecutive_groups(start, group_size)  # slices: no per-batch plan
            threads = 1
        else:
            todo = map(self._group_rows, _chunks(self.plan.batches(epoch, start), group_size))
            threads = STACK_THREADS
        if ahead:
            yield from self._stacked_ahead(todo, columns, ahead, align, threads)
        else:
            yield from (self._stack_group(group, align) for group in todo)

    @property
    def _gather_reason(self) -> str:
        """The copy-counter reason of a gathered batch: of windows, or of rows."""
        return "window-gather" if self.window is not None else "gather"

    def _sample_rows(self, samples: slice | np.ndarray, padded: np.ndarray | None) -> slice | np.ndarray:
        """Rows of the sample views for planned ``samples``: a slice, or an index (sorted unless padded)."""
        if self._valid is not None:
            samples = self._valid[samples]
        if isinstance(samples, slice):
            return samples
        return np.sort(samples) if padded is None else samples  # sorted reads are faster; order is free

    def _consecutive_groups(self, start: int, group_size: int) -> Iterator[_Group]:
        """The groups of an epoch whose batches are consecutive rows from batch ``start`` on (no plan walk)."""
        bs, total, num = self.batch_size, self.plan.samples_per_epoch, self.plan.num_batches
        for b0 in range(max(start, 0), num, group_size):
            b1 = min(b0 + group_size, num)
            rows: list[slice | np.ndarray] = [slice(lo, min(lo + bs, total)) for lo in range(b0 * bs, b1 * bs, bs)]
            yield _Group(range(b0, b1), None, rows, slice(b0 * bs, min(b1 * bs, total)), None)

    def _group_rows(self, group: list[PlannedBatch]) -> _Group:
        """The sample rows of each planned batch of ``group``, and of the whole group in one slice or index."""
        numbers = [p.number for p in group]
        padded = None if all(p.padded is None for p in group) else [p.padded for p in group]
        if padded is None and all(isinstance(p.samples, np.ndarray) for p in group):
            # shuffled batches without padding: index, sort and gather once per group
            whole = np.concatenate([p.samples for p in group if isinstance(p.samples, np.ndarray)])
            if self._valid is not None:
                whole = self._valid[whole]
            if whole.dtype != np.int64:
                whole = whole.astype(np.int64)
            bounds: np.ndarray = np.cumsum([0] + [len(p.samples) for p in group if isinstance(p.samples, np.ndarray)])
            _sort_batches(whole, bounds, None, self.batch_size)  # a copy of the order: sorting it in place is safe
            return _Group(numbers, None, [whole[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])], whole, whole)
        rows = [self._sample_rows(p.samples, p.padded) for p in group]
        slices = [r for r in rows if isinstance(r, slice)]
        if len(slices) == len(rows) and all(a.stop == b.start for a, b in zip(slices, slices[1:])):
            return _Group(numbers, padded, rows, slice(slices[0].start, slices[-1].stop), None)
        whole = np.concatenate([np.arange(r.start, r.stop) if isinstance(r, slice) else r for r in rows])
        return _Group(numbers, padded, rows, whole, whole)

    def _stack_group(self, group: _Group, align: int | None) -> StackedGroup:
        """The group with its x in one copy (counted) and its y (gathered, or a view of consecutive rows)."""
        columns = self._x_cols
        assert columns is not None
        reason = "stack" if group.gather is None else self._gather_reason
        xs = columns.batch(group.whole, align, reason)
        return self._stacked(group, xs, None if group.gather is None else self._take_y(group.gather, align))

    def _take_y(self, index: np.ndarray, align: int | None) -> np.ndarray | None:
        return None if self._y is None else take_rows(self._y, index, align, self._gather_reason)

    def _stacked(self, group: _Group, xs: np.ndarray, ys: np.ndarray | None) -> StackedGroup:
        """The finished group; a consecutive group's y are views of the rows."""
        if group.gather is None and self._y is not None:
            ys = self._y[group.whole]
        return StackedGroup(group.numbers, group.padded, group.rows, xs, ys)

    def _stacked_ahead(
        self, groups: Iterator[_Group], columns: ColumnStack, ahead: int, align: int | None, threads: int
    ) -> Iterator[StackedGroup]:
        """:meth:`_stack_group` of each group, its copies queued ``ahead`` groups early to the kernel's threads."""
        y = self._y
        y_rows = None if y is None or y.ndim > 2 else ColumnStack.rows_of(y)  # windows of y: gathered here
        reason = self._gather_reason
        queued: deque[tuple[_Group, Pending, Pending | np.ndarray | None]] = deque()
        with StackAhead(capacity=2 * (ahead + 1), threads=threads) as worker:
            for group in groups:
                index = group.gather
                xs = worker.submit(columns, group.whole, "stack" if index is None else reason, align)
                ys: Pending | np.ndarray | None = None
                if index is not None and y is not None:
                    ys = (
                        worker.submit(y_rows, index, reason, align)
                        if y_rows is not None
                        else self._take_y(index, align)
                    )
                queued.append((group, xs, ys))
                if len(queued) > ahead:
                    yield self._finished(*queued.popleft())
            while queued:
                yield self._finished(*queued.popleft())

    def _finished(self, group: _Group, xs: Pending, ys: Pending | np.ndarray | None) -> StackedGroup:
        """A queued group once its copies are done."""
        return self._stacked(group, xs.result(), ys.result() if isinstance(ys, Pending) else ys)

    def _batch(
        self,
        rows: slice | np.ndarray,
        padded: np.ndarray | None,
        number: int,
        epoch: int,
        x: np.ndarray | None = None,
        y: np.ndarray | None = None,
    ) -> Batch:
        """One batch of sample rows ``rows`` (from :meth:`_sample_rows`); ``x``/``y`` when already stacked/gathered."""
        if x is not None:  # stacked by _stack_group (never aligned): y came with it, or is a view of the rows
            if y is None and self._y is not None:
                y = self._y[rows]
        elif isinstance(rows, slice):
            y = None if self._y is None else self._y[rows]
            x = self._x[rows]
            if self.align and (not is_aligned(x, self.align) or not x.flags.c_contiguous):
                x = aligned_copy(x, self.align, "tf-batch")
            if self.align and y is not None and (not is_aligned(y, self.align) or not y.flags.c_contiguous):
                y = aligned_copy(y, self.align, "tf-batch")
        else:
            reason = self._gather_reason
            columns = self._x_columns()
            x = (
                take_rows(self._x, rows, self.align, reason)
                if columns is None
                else columns.batch(rows, self.align, reason)
            )
            y = None if self._y is None else take_rows(self._y, rows, self.align, reason)
        # Bind the id arrays now: a global shuffle replaces them at the next epoch.
        first = self._first
        ids, offset = (self._starts, first) if self._starts is not None else (self._ids, 0)
        return Batch(x, y, lambda: _global_ids(rows, first, ids, offset), padded, number, epoch)
