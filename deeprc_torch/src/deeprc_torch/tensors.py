"""Core batches (numpy views) to torch tensors, without copying.

``torch.from_numpy`` shares the view's memory, so an unshuffled batch of a single (or
packed) column is a tensor over the Arrow buffer itself. torch has no read-only tensors,
so views flagged read-only follow the core's one policy, ``readonly=``
(:func:`deeprc_core.readonly.to_dlpack_safe`):

``"auto"`` (default)
    memory that really cannot be written (a memory-mapped file: a write there would
    segfault) is copied once per batch, counted as ``readonly``; read-only *views* of
    writable memory (the strided windows of ``window=``) are shared, and a
    :class:`ReadOnlyBatchWarning` says once that in-place writes would reach the table.
``"share"``
    always share (the caller promises not to write).
``"copy"``
    always copy read-only batches (counted as ``readonly``).
``"error"``
    raise on read-only memory instead of copying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from deeprc_core.readonly import ReadOnlyBatchWarning, ReadOnlyPolicy, to_dlpack_safe

from deeprc_core import Batch

__all__ = ["ReadOnlyBatchWarning", "ReadOnlyPolicy", "TensorBatch", "numpy_dtype", "to_tensor", "to_tensors"]


@dataclass(frozen=True)
class TensorBatch:
    """One batch as tensors: inputs, targets (or None), global sample ids, padding mask (or None)."""

    x: torch.Tensor
    y: torch.Tensor | None
    index: torch.Tensor
    padded: torch.Tensor | None
    number: int
    epoch: int


def numpy_dtype(dtype: Any) -> np.dtype:
    """A numpy dtype from a torch dtype, numpy dtype or name."""
    if isinstance(dtype, torch.dtype):
        return np.dtype(str(dtype).removeprefix("torch."))
    return np.dtype(dtype)


def to_tensor(view: np.ndarray, readonly: ReadOnlyPolicy = "auto") -> torch.Tensor:
    """A tensor sharing ``view``'s memory (see the module docstring for read-only views)."""
    if view.flags.writeable:  # the common case, inlined: this runs for every batch
        return torch.from_numpy(view)
    return torch.from_numpy(to_dlpack_safe(view, readonly))


def to_tensors(batch: Batch, readonly: ReadOnlyPolicy = "auto") -> TensorBatch:
    """Convert a core :class:`~deeprc_core.Batch` into a :class:`TensorBatch` (zero-copy)."""
    x = to_tensor(batch.x, readonly)
    y = None if batch.y is None else to_tensor(batch.y, readonly)
    index = torch.from_numpy(np.ascontiguousarray(batch.index, dtype=np.int64))
    padded = None if batch.padded is None else torch.from_numpy(batch.padded)
    return TensorBatch(x, y, index, padded, batch.number, batch.epoch)
