"""Batches stacked from separate columns: the compiled kernel and its numpy fallback.

Most tables hold their features as separate scalar columns; a batch ``(B, F)`` is then
one copy of ``B`` rows of every column, interleaved (never a copy of the table). numpy
can only write such a batch one column at a time, through its generic strided loop
(about half a nanosecond per value); the optional C extension ``deeprc_core._stack``
fills the whole batch in one call, with the GIL released, at about the speed memory
delivers the columns (:file:`bench/torch_loader.py` measures both).

``DEEPRC_STACK_KERNEL`` picks the implementation: ``auto`` (default: the kernel where it
was built, else numpy), ``compiled`` (the kernel or an ImportError that says how to build
it) or ``numpy``. :data:`STACK_KERNEL` says which one this process runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from . import env_vars
from .copies import record_copy
from .views import aligned_empty

_CHOICES = ("auto", "compiled", "numpy")


def _load_native() -> ModuleType | None:
    """The compiled module as ``DEEPRC_STACK_KERNEL`` asks, or None for numpy."""
    choice = os.environ.get(env_vars.STACK_KERNEL, "").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(f"{env_vars.STACK_KERNEL}={choice!r}: use one of {', '.join(_CHOICES)}")
    if choice == "numpy":
        return None
    try:
        from . import _stack
    except ImportError as exc:
        if choice == "compiled":
            raise ImportError(
                f"{env_vars.STACK_KERNEL}=compiled, but deeprc_core._stack is not built ({exc}); reinstall "
                "deeprc-core where a C compiler and the Python headers exist (e.g. apt-get install gcc "
                "python3-dev; pip install --force-reinstall --no-deps deeprc-core), or unset the variable"
            ) from exc
        return None
    return _stack


#: The compiled kernel module (``deeprc_core._stack``: stacking, gathering, permuting), or None where numpy
#: does the work (not built, or ``DEEPRC_STACK_KERNEL=numpy``); :mod:`deeprc_core.permutation` uses it too
NATIVE = _load_native()
_kernel: Callable[[np.ndarray, Any, int | np.ndarray], None] | None = None if NATIVE is None else NATIVE.stack

#: The implementation that stacks separate columns in this process: "compiled" or "numpy".
STACK_KERNEL = "compiled" if NATIVE is not None else "numpy"


def _kernel_takes(columns: Sequence[np.ndarray]) -> bool:
    """True when the kernel can stack ``columns``: one plain dtype, and each sample's values contiguous."""
    dtype = columns[0].dtype
    if dtype.kind not in "iuf" or dtype.itemsize not in (1, 2, 4, 8):
        return False
    for c in columns:
        if c.dtype != dtype or c.ndim not in (1, 2) or c.strides[0] <= 0:
            return False
        if c.ndim == 2 and (c.strides[1] != dtype.itemsize or c.shape[1:] != columns[0].shape[1:]):
            return False
    return True


def _fill_numpy(out: np.ndarray, columns: Sequence[np.ndarray], rows: slice | np.ndarray) -> None:
    """The fallback: one strided write per column into the batch (no temporary for slices)."""
    for j, col in enumerate(columns):
        out[..., j] = col[rows]


class ColumnStack:
    """Batches of rows of a fixed list of per-column views, the columns on the last axis.

    ``columns`` are views of one column each, ``(n,)`` or ``(n, L)`` for windows; a batch
    is ``(B, F)`` or ``(B, L, F)``, C-contiguous: one copy of those rows only (counted),
    never of the table. Which implementation serves these columns is decided once, here.
    """

    def __init__(self, columns: Sequence[np.ndarray]) -> None:
        if not columns:
            raise ValueError("ColumnStack needs at least one column")
        self.columns = list(columns)
        self.num_samples = len(self.columns[0])
        self.sample_shape: tuple[int, ...] = (*self.columns[0].shape[1:], len(self.columns))
        self.dtype = self.columns[0].dtype
        # the kernel's checked handle on the column buffers (parsed once, not per batch)
        self._handle = None if NATIVE is None or not _kernel_takes(self.columns) else NATIVE.Columns(self.columns)

    @classmethod
    def rows_of(cls, array: np.ndarray) -> ColumnStack:
        """Batches of rows of one array, shaped ``(B, *array.shape[1:])`` (a gather of a packed target, say)."""
        stack = cls([array])
        stack.sample_shape = tuple(array.shape[1:])  # one column: its last axis of 1 is dropped
        return stack

    @property
    def compiled(self) -> bool:
        """True when the compiled kernel stacks these columns (False: numpy, or a layout it cannot take)."""
        return self._handle is not None

    def _empty(self, rows: slice | np.ndarray, alignment: int | None) -> tuple[np.ndarray, int | np.ndarray | None]:
        """An empty batch for ``rows`` and the rows as the kernel takes them (None: numpy must fill it)."""
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.num_samples)
            n = len(range(start, stop, step))
            kernel_rows: int | np.ndarray | None = start if step == 1 else None
        else:
            n = len(rows)
            kernel_rows = np.ascontiguousarray(rows, np.int64)
        shape = (n, *self.sample_shape)
        out = aligned_empty(shape, self.dtype, alignment) if alignment else np.empty(shape, dtype=self.dtype)
        return out, (kernel_rows if self._handle is not None and n else None)

    def batch(self, rows: slice | np.ndarray, alignment: int | None = None, reason: str = "stack") -> np.ndarray:
        """The batch of sample ``rows`` (a slice or an index), on ``alignment`` bytes when given (counted under ``reason``)."""
        out, kernel_rows = self._empty(rows, alignment)
        if kernel_rows is not None:
            assert _kernel is not None
            _kernel(out, self._handle, kernel_rows)
        else:
            _fill_numpy(out.reshape(len(out), *self.columns[0].shape[1:], len(self.columns)), self.columns, rows)
        record_copy(reason, out.nbytes, "batch")
        return out


class Pending:
    """A batch a :class:`StackAhead` is stacking: :meth:`result` waits for it."""

    __slots__ = ("_out", "_ticket", "_worker")

    def __init__(self, out: np.ndarray, ticket: int | None, worker: Any) -> None:
        self._out, self._ticket, self._worker = out, ticket, worker

    def result(self) -> np.ndarray:
        """The batch, once the worker has stacked it (blocks without the GIL until then)."""
        if self._ticket is not None:
            self._worker.wait(self._ticket)
            self._ticket = None
        return self._out


class StackAhead:
    """Stacks batches ahead of the consumer in one native thread of the kernel, which never takes the GIL.

    :meth:`submit` checks a job and queues it; the Python loop goes on while the thread
    copies (on another core), and :meth:`Pending.result` waits only when it is behind.
    At most ``capacity`` batches are submitted and not yet waited for. Columns the kernel
    cannot take are stacked at once, by numpy. Use it as a context manager (or call
    :meth:`close`): closing stops the thread.
    """

    def __init__(self, capacity: int, threads: int = 1) -> None:
        if NATIVE is None:
            raise RuntimeError(f"StackAhead needs the compiled kernel ({env_vars.STACK_KERNEL}: {STACK_KERNEL})")
        self._worker = NATIVE.Worker(capacity, threads)

    def submit(
        self, stack: ColumnStack, rows: slice | np.ndarray, reason: str = "stack", alignment: int | None = None
    ) -> Pending:
        """Queue the batch of ``rows`` of ``stack`` (as :meth:`ColumnStack.batch`; counted now)."""
        out, kernel_rows = stack._empty(rows, alignment)
        if kernel_rows is None:
            return Pending(stack.batch(rows, alignment, reason), None, None)
        ticket = self._worker.submit(out, stack._handle, kernel_rows)
        record_copy(reason, out.nbytes, "batch")
        return Pending(out, ticket, self._worker)

    def close(self) -> None:
        """Stop the thread (after the batch it copies); batches not started are dropped."""
        self._worker.close()

    def __enter__(self) -> StackAhead:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def stack_columns(
    columns: Sequence[np.ndarray],
    rows: slice | np.ndarray,
    alignment: int | None = None,
    reason: str = "stack",
) -> np.ndarray:
    """One batch of ``rows`` (a slice or an index) from per-column views: :meth:`ColumnStack.batch` once.

    With ``alignment`` the batch lies on that byte boundary; the copy is counted under ``reason``.
    """
    return ColumnStack(columns).batch(rows, alignment, reason)
