"""Type stub of the optional C extension deeprc_core._stack (see _stack.c)."""

from collections.abc import Sequence

import numpy as np

def stack(out: np.ndarray, columns: Sequence[np.ndarray], rows: int | np.ndarray, /) -> None:
    """Fill the C-contiguous batch ``out`` with samples ``rows`` of ``columns``, the columns on the last axis."""
