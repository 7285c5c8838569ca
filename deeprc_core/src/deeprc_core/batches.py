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
compiled kernel of :mod:`deeprc_core.stacking` where it is built); a shuffled batch is one
gather of that batch only; a dtype cast or a chunked column is one copy of that column at
setup (``cast``, ``combine``); a global shuffle moves the table once per epoch. All are
counted in :func:`deeprc_core.copy_stats`.

Two parts do the work: the sample index (:mod:`deeprc_core.sample_index`: checked columns,
views, windows, the NaN filter, global ids) and the group stacker
(:mod:`deeprc_core.stacked_groups`: batches stacked a group at a time, ahead in native
threads). This module agrees the plan and composes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa

from .batch_settings import BatchOptions, BatchSettings
from .comm import agree
from .errors import DeepRCError, SchemaError, ZeroCopyError
from .plan import BatchPlan, EvenPolicy, epoch_number
from .sample_index import ROW_ID, BatchArrays, SampleIndex, check_sample_columns, global_ids
from .stacked_groups import GroupStacker, StackedGroup, group_size, sort_batches
from .table import GlobalTable
from .views import aligned_copy, is_aligned, take_rows
from .windows import window_bounds

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Batch", "BatchArrays", "EpochRows", "StackedGroup", "TableBatches"]


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


class TableBatches:
    """Agreed, resumable batches of (x, y) views over a GlobalTable (collective to build).

    ``settings`` is the :class:`~deeprc_core.batch_settings.BatchSettings` record an adapter
    built (checked there, once); the batch-setting keywords (``shuffle=``, ``window=``,
    ...) are a convenience that builds it, with ``shuffle`` off by default here. ``align``
    makes every batch start on that byte boundary (64 for TensorFlow), copying (counted)
    only where it must; ``what`` names the caller in every error.
    """

    def __init__(
        self,
        source: GlobalTable,
        features: str | Sequence[str],
        target: str | Sequence[str] | None,
        batch_size: int,
        settings: BatchSettings | None = None,
        *,
        align: int | None = None,
        what: str = "dataset",
        **options: Unpack[BatchOptions],
    ) -> None:
        s = BatchSettings.resolve(what, settings, options, shuffle=False)
        #: the settings these batches follow (checked when the record was built)
        self.settings = s
        self.comm = source.comm
        self.shuffle, self.seed, self.window, self.dtype = s.shuffle, s.seed, s.window, s.dtype
        #: groups of batches the kernel's thread stacks ahead from separate columns (0: in the consuming thread)
        self.stack_ahead = s.stack_ahead
        self.dropna_target = s.dropna_target
        self.align = align
        self.what = what
        self.features, self.target = features, target
        err: Exception | None = None
        try:
            check_sample_columns(source, features, target, s, what)
        except (SchemaError, ZeroCopyError, ValueError) as exc:
            err = exc
        agree(self.comm, err, f"{what} setup")
        #: the policy in force: ``even``, with ``"auto"`` resolved to ``"drop"`` or ``"rebalance"``
        self.even: EvenPolicy = s.even
        if s.even == "rebalance":
            source = self._rebalanced(source)
        self._base = source
        self._shuffled_epoch: int | None = None
        if self.shuffle == "global":  # its exchange leaves the rows balanced already
            self._base = source.with_column(ROW_ID, pa.array(np.arange(source.local_num_rows) + source.row_offset))
            self._load(self._base.global_shuffle(self.seed, 0))
            self._shuffled_epoch = 0
        else:
            self._load(source)
        if s.even == "auto":
            self.even = "drop"
            plan = self._make_plan(batch_size) if self.shuffle == "global" else self._auto_plan(batch_size)
            if plan is None:  # 'drop' would skip samples that moving rows keeps
                self.even = "rebalance"
                self._base = self._rebalanced(source)
                self._load(self._base)
                plan = self._make_plan(batch_size)
        else:
            plan = self._make_plan(batch_size)
        self.plan = plan
        #: samples per batch (checked by the plan)
        self.batch_size = plan.batch_size
        self._count_nan_targets()  # of the table the plan is over: one collective

    def _make_plan(self, batch_size: int) -> BatchPlan:
        return BatchPlan(
            self.num_samples,
            batch_size,
            self.comm,
            even="pad" if self.even == "pad" else "drop",
            shuffle="local" if self.shuffle == "local" else False,
            seed=self.seed,
            drop_last=self.settings.drop_last,
            what=self.what,
        )

    def _auto_plan(self, batch_size: int) -> BatchPlan | None:
        """The 'drop' plan when it skips at most one sample per rank, else None (rebalance instead).

        The counts are agreed, so every rank returns alike.
        """
        try:
            plan = self._make_plan(batch_size)
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
        ix = self.index
        local = ix.nan_windows if self.window is not None else ix.n_candidates - ix.num_samples
        #: samples skipped on all ranks because their target is NaN (dropna_target)
        self.nan_target_skipped = int(self.comm.allreduce_int([local])[0])

    def _load(self, table: GlobalTable) -> None:
        """Index the samples of this table (after a global shuffle, for the new epoch)."""
        #: the samples of the current table and the views they are read from
        self.index = SampleIndex(table, self.features, self.target, self.settings, self.align)

    @property
    def table(self) -> GlobalTable:
        """The table the batches are cut from (this epoch's, under ``shuffle='global'``)."""
        return self.index.table

    @property
    def num_samples(self) -> int:
        """This rank's samples (rows, or windows) after the NaN filter."""
        return self.index.num_samples

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
        return self.index.sample_shapes

    # ------------------------------------------- index form (graph-side consumers)
    def arrays(self) -> BatchArrays:
        """This rank's data as the arrays batches are cut from (see :class:`BatchArrays`).

        A list of scalar feature columns comes back column by column, not packed: a
        consumer that stacks per batch (deeprc-tf) never copies the table. Call
        :meth:`prepare_epoch` first under ``shuffle='global'`` (the arrays change per epoch).
        """
        return self.index.arrays()

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
        valid, starts = self.index.valid, self.index.starts
        if samples is None and valid is None and starts is None:
            return EpochRows(epoch, None, bounds, None, first)
        if samples is None:
            samples = np.arange(self.plan.samples_per_epoch, dtype=np.int64)
        else:
            sort_batches(samples, bounds, padded, self.batch_size)
        rows = samples if valid is None else valid[samples]
        if starts is not None:
            rows = starts[rows]
        return EpochRows(epoch, rows, bounds, padded, first)

    @property
    def in_order(self) -> bool:
        """True when every epoch is consecutive rows in order (:attr:`EpochRows.rows` is None): batches are slices."""
        return (
            self.shuffle == "none"
            and self.window is None
            and self.index.valid is None
            and self.plan.padded_per_epoch == 0
        )

    def global_ids(self, rows: slice | np.ndarray) -> np.ndarray:
        """Global sample ids of rows of :meth:`arrays` (the global row, or a window's first global row)."""
        return self.index.global_ids(rows)

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
        ix = self.index
        if ix.x_columns() is None or self.align:
            for p in self.plan.batches(epoch, start):
                yield self._batch(ix.sample_rows(p.samples, p.padded), p.padded, p.number, epoch)
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
        columns = self.index.x_columns()
        ahead = self.stack_ahead if columns is not None and columns.compiled else 0
        return group_size(self.index, self.batch_size, ahead, group_bytes)

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
        stacker = GroupStacker(self.index, self.plan, self.stack_ahead, self.what)
        yield from stacker.groups(epoch, start, group_bytes, align)

    def _batch(
        self,
        rows: slice | np.ndarray,
        padded: np.ndarray | None,
        number: int,
        epoch: int,
        x: np.ndarray | None = None,
        y: np.ndarray | None = None,
    ) -> Batch:
        """One batch of sample rows ``rows`` (from :meth:`SampleIndex.sample_rows`); ``x``/``y`` when already stacked."""
        ix = self.index
        if x is not None:  # stacked by the group stacker (never aligned): y came with it, or is a view of the rows
            if y is None and ix.y is not None:
                y = ix.y[rows]
        elif isinstance(rows, slice):
            y = None if ix.y is None else ix.y[rows]
            x = ix.x[rows]
            if self.align and (not is_aligned(x, self.align) or not x.flags.c_contiguous):
                x = aligned_copy(x, self.align, "tf-batch")
            if self.align and y is not None and (not is_aligned(y, self.align) or not y.flags.c_contiguous):
                y = aligned_copy(y, self.align, "tf-batch")
        else:
            reason = ix.gather_reason
            columns = ix.x_columns()
            x = (
                take_rows(ix.x, rows, self.align, reason)
                if columns is None
                else columns.batch(rows, self.align, reason)
            )
            y = None if ix.y is None else take_rows(ix.y, rows, self.align, reason)
        # Bind the id arrays now: a global shuffle replaces the index at the next epoch.
        first = ix.first
        ids, offset = (ix.starts, first) if ix.starts is not None else (ix.ids, 0)
        return Batch(x, y, lambda: global_ids(rows, first, ids, offset), padded, number, epoch)
