"""Type stub of the optional C extension deeprc_core._stack (see _stack.c)."""

from collections.abc import Sequence

import numpy as np

class Columns:
    """Separate column buffers, checked once, to stack batches from."""

    def __init__(self, columns: Sequence[np.ndarray], /) -> None: ...
    @property
    def num_samples(self) -> int:
        """Samples in every column (the shortest column's)."""

def stack(out: np.ndarray, columns: Columns | Sequence[np.ndarray], rows: int | np.ndarray, /) -> None:
    """Fill the C-contiguous batch ``out`` with samples ``rows`` of ``columns``, the columns on the last axis."""

class Worker:
    """Native threads that run :func:`stack` jobs, started in order, without the GIL."""

    def __init__(self, capacity: int, threads: int = 1) -> None: ...
    def submit(self, out: np.ndarray, columns: Columns | Sequence[np.ndarray], rows: int | np.ndarray, /) -> int:
        """Check the job as :func:`stack` does and queue it; returns its ticket."""
    def wait(self, ticket: int, /) -> None:
        """Block (GIL released) until job ``ticket`` and every earlier one is done."""
    def close(self) -> None:
        """Stop the threads after the jobs they run; jobs not started are dropped."""

def permute(out: np.ndarray, positions: int | np.ndarray, n: int, left: int, right: int, keys: bytes, /) -> None:
    """Fill the int32/int64 ``out`` with the keyed Feistel permutation of ``range(n)`` at ``positions``."""
