"""Groups of consecutive batches stacked in one copy from separate feature columns, ahead in native threads.

:class:`GroupStacker` walks a :class:`~deeprc_core.plan.BatchPlan` over a
:class:`~deeprc_core.sample_index.SampleIndex` a group of batches at a time: the per-call cost
of a copy is paid once per group, and each batch is a view of its group. With the compiled
kernel of :mod:`deeprc_core.stacking` the copies run ``stack_ahead`` groups ahead in its
threads (:class:`~deeprc_core.stacking.StackAhead`), overlapping the consumer's Python loop.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from .plan import BatchPlan, PlannedBatch
from .sample_index import SampleIndex
from .stacking import ColumnStack, Pending, StackAhead
from .views import take_rows

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


def sort_batches(samples: np.ndarray, bounds: np.ndarray, padded: np.ndarray | None, batch_size: int) -> None:
    """Sort, in place, the samples of every batch without padding (sorted reads are faster; order within a batch is free)."""
    clean_until = len(samples) if padded is None or not padded.any() else int(np.argmax(padded))
    full = min(clean_until, int(bounds[-1])) // batch_size  # leading whole batches without padding
    samples[: full * batch_size].reshape(full, batch_size).sort(axis=1)
    for b in range(full, len(bounds) - 1):
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        if hi <= clean_until:
            samples[lo:hi].sort()


def group_size(index: SampleIndex, batch_size: int, ahead: int, group_bytes: int | None = None) -> int:
    """Batches of ``batch_size`` samples of ``index`` per group of ``group_bytes`` of features (at least one).

    The default is :data:`STACK_BYTES`, or :data:`STACK_BYTES_AHEAD` when groups are stacked ``ahead``.
    """
    per_batch = batch_size * int(np.prod(index.sample_shapes[0])) * index.dtype.itemsize
    default = STACK_BYTES_AHEAD if ahead else STACK_BYTES
    return max(1, (group_bytes or default) // max(per_batch, 1))


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


class GroupStacker:
    """Stacks the batches of ``plan`` over ``index`` a group at a time (features as separate scalar columns).

    ``stack_ahead`` is how many groups the kernel's native threads stack ahead (0, or without
    the compiled kernel: in the consuming thread).
    """

    def __init__(self, index: SampleIndex, plan: BatchPlan, stack_ahead: int, what: str) -> None:
        columns = index.x_columns()
        if columns is None:
            raise ValueError(f"{what}: stacked_groups needs the features as separate scalar columns")
        self.index, self.plan, self.columns = index, plan, columns
        #: groups stacked ahead in the kernel's threads (0: in the consuming thread)
        self.ahead = stack_ahead if columns.compiled else 0

    def group_size(self, group_bytes: int | None = None) -> int:
        """Batches per group (``group_bytes`` of features; at least one batch)."""
        return group_size(self.index, self.plan.batch_size, self.ahead, group_bytes)

    def groups(
        self, epoch: int, start: int = 0, group_bytes: int | None = None, align: int | None = None
    ) -> Iterator[StackedGroup]:
        """The batches of ``epoch`` from batch ``start`` on, a :class:`StackedGroup` at a time (x on ``align`` bytes)."""
        group_size = self.group_size(group_bytes)
        # Consecutive rows: one thread outruns the loop (a second only takes the loop's core); gathers wait on
        # memory, and STACK_THREADS keep more reads in flight.
        if self.plan.shuffle != "local" and self.index.valid is None and self.plan.padded_per_epoch == 0:
            todo: Iterator[_Group] = self._consecutive_groups(start, group_size)  # slices: no per-batch plan
            threads = 1
        else:
            todo = map(self._group_rows, _chunks(self.plan.batches(epoch, start), group_size))
            threads = STACK_THREADS
        if self.ahead:
            yield from self._stacked_ahead(todo, align, threads)
        else:
            yield from (self._stack_group(group, align) for group in todo)

    def _consecutive_groups(self, start: int, group_size: int) -> Iterator[_Group]:
        """The groups of an epoch whose batches are consecutive rows from batch ``start`` on (no plan walk)."""
        bs, total, num = self.plan.batch_size, self.plan.samples_per_epoch, self.plan.num_batches
        for b0 in range(max(start, 0), num, group_size):
            b1 = min(b0 + group_size, num)
            rows: list[slice | np.ndarray] = [slice(lo, min(lo + bs, total)) for lo in range(b0 * bs, b1 * bs, bs)]
            yield _Group(range(b0, b1), None, rows, slice(b0 * bs, min(b1 * bs, total)), None)

    def _group_rows(self, group: list[PlannedBatch]) -> _Group:
        """The sample rows of each planned batch of ``group``, and of the whole group in one slice or index."""
        numbers = [p.number for p in group]
        padded = None if all(p.padded is None for p in group) else [p.padded for p in group]
        valid = self.index.valid
        if padded is None and all(isinstance(p.samples, np.ndarray) for p in group):
            # shuffled batches without padding: index, sort and gather once per group
            whole = np.concatenate([p.samples for p in group if isinstance(p.samples, np.ndarray)])
            if valid is not None:
                whole = valid[whole]
            if whole.dtype != np.int64:
                whole = whole.astype(np.int64)
            bounds: np.ndarray = np.cumsum([0] + [len(p.samples) for p in group if isinstance(p.samples, np.ndarray)])
            sort_batches(whole, bounds, None, self.plan.batch_size)  # a copy of the order: sorting it in place is safe
            return _Group(numbers, None, [whole[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])], whole, whole)
        rows = [self.index.sample_rows(p.samples, p.padded) for p in group]
        slices = [r for r in rows if isinstance(r, slice)]
        if len(slices) == len(rows) and all(a.stop == b.start for a, b in zip(slices, slices[1:])):
            return _Group(numbers, padded, rows, slice(slices[0].start, slices[-1].stop), None)
        whole = np.concatenate([np.arange(r.start, r.stop) if isinstance(r, slice) else r for r in rows])
        return _Group(numbers, padded, rows, whole, whole)

    def _stack_group(self, group: _Group, align: int | None) -> StackedGroup:
        """The group with its x in one copy (counted) and its y (gathered, or a view of consecutive rows)."""
        reason = "stack" if group.gather is None else self.index.gather_reason
        xs = self.columns.batch(group.whole, align, reason)
        return self._stacked(group, xs, None if group.gather is None else self._take_y(group.gather, align))

    def _take_y(self, index: np.ndarray, align: int | None) -> np.ndarray | None:
        y = self.index.y
        return None if y is None else take_rows(y, index, align, self.index.gather_reason)

    def _stacked(self, group: _Group, xs: np.ndarray, ys: np.ndarray | None) -> StackedGroup:
        """The finished group; a consecutive group's y are views of the rows."""
        if group.gather is None and self.index.y is not None:
            ys = self.index.y[group.whole]
        return StackedGroup(group.numbers, group.padded, group.rows, xs, ys)

    def _stacked_ahead(self, groups: Iterator[_Group], align: int | None, threads: int) -> Iterator[StackedGroup]:
        """:meth:`_stack_group` of each group, its copies queued ``ahead`` groups early to the kernel's threads."""
        y, ahead, columns = self.index.y, self.ahead, self.columns
        y_rows = None if y is None or y.ndim > 2 else ColumnStack.rows_of(y)  # windows of y: gathered here
        reason = self.index.gather_reason
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
