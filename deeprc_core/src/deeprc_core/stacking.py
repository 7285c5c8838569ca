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

import numpy as np

from . import env_vars
from .copies import record_copy
from .views import aligned_empty

_CHOICES = ("auto", "compiled", "numpy")


def _load_kernel() -> Callable[[np.ndarray, Sequence[np.ndarray], int | np.ndarray], None] | None:
    """The compiled ``stack`` as ``DEEPRC_STACK_KERNEL`` asks, or None for numpy."""
    choice = os.environ.get(env_vars.STACK_KERNEL, "").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(f"{env_vars.STACK_KERNEL}={choice!r}: use one of {', '.join(_CHOICES)}")
    if choice == "numpy":
        return None
    try:
        from ._stack import stack
    except ImportError as exc:
        if choice == "compiled":
            raise ImportError(
                f"{env_vars.STACK_KERNEL}=compiled, but deeprc_core._stack is not built ({exc}); reinstall "
                "deeprc-core where a C compiler and the Python headers exist (e.g. apt-get install gcc "
                "python3-dev; pip install --force-reinstall --no-deps deeprc-core), or unset the variable"
            ) from exc
        return None
    return stack


_kernel = _load_kernel()

#: The implementation that stacks separate columns in this process: "compiled" or "numpy".
STACK_KERNEL = "compiled" if _kernel is not None else "numpy"


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
        self.sample_shape = (*self.columns[0].shape[1:], len(self.columns))
        self.dtype = self.columns[0].dtype
        self._kernel = _kernel if _kernel is not None and _kernel_takes(self.columns) else None

    @property
    def compiled(self) -> bool:
        """True when the compiled kernel stacks these columns (False: numpy, or a layout it cannot take)."""
        return self._kernel is not None

    def batch(self, rows: slice | np.ndarray, alignment: int | None = None, reason: str = "stack") -> np.ndarray:
        """The batch of sample ``rows`` (a slice or an index), on ``alignment`` bytes when given (counted under ``reason``)."""
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.num_samples)
            n = len(range(start, stop, step))
        else:
            n = len(rows)
        shape = (n, *self.sample_shape)
        out = aligned_empty(shape, self.dtype, alignment) if alignment else np.empty(shape, dtype=self.dtype)
        if self._kernel is not None and n and not (isinstance(rows, slice) and step != 1):
            self._kernel(out, self.columns, start if isinstance(rows, slice) else np.ascontiguousarray(rows, np.int64))
        else:
            _fill_numpy(out, self.columns, rows)
        record_copy(reason, out.nbytes, "batch")
        return out


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
