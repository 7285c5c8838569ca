"""Sliding windows across a global table, for sequence models.

A window starting at global row ``t`` reads inputs ``[t, t + input_len)`` and targets
``[t + input_len + offset, t + input_len + offset + horizon)``. Windows may cross
partition boundaries: each rank receives a *halo*, the first ``span - 1`` rows that
follow its partition (from the next rank or ranks), so the set of windows is the same
as on one process and each window is owned by the rank holding its first row. The
halo is a small copy (``span - 1`` rows, counted as ``exchange``); the windows
themselves are strided views, never materialised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .exchange import exchange_tables
from .table import GlobalTable


@dataclass(frozen=True)
class Window:
    """Shape of the windows: ``input_len`` steps in, ``horizon`` steps out.

    ``stride`` keeps only windows whose first global row is a multiple of it;
    ``offset`` shifts the targets (``-1`` aligns a one-step target with the last input,
    the usual sequence-to-one setup); ``group`` names a column (e.g. a basin id):
    windows never span two groups. Rows must be ordered in time within each group.
    """

    input_len: int
    horizon: int = 1
    stride: int = 1
    offset: int = 0
    group: str | None = None

    def __post_init__(self) -> None:
        if self.input_len < 1 or self.horizon < 1 or self.stride < 1:
            raise ValueError(f"window sizes must be positive: {self}")
        if self.offset < -self.input_len:
            raise ValueError(f"window offset {self.offset} starts the targets before the inputs")

    @property
    def span(self) -> int:
        """Rows one window touches, inputs and targets together."""
        return max(self.input_len, self.input_len + self.offset + self.horizon)

    @property
    def target_start(self) -> int:
        """Row of the first target, relative to the window's first row."""
        return self.input_len + self.offset

    @classmethod
    def coerce(cls, value: Any) -> Window | None:
        """Accept a Window, ``(input_len, horizon[, stride])``, a dict, or None."""
        if value is None or isinstance(value, Window):
            return value
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, Sequence) and not isinstance(value, str) and 1 <= len(value) <= 3:
            sizes = [int(v) for v in value] + [1, 1]
            return cls(input_len=sizes[0], horizon=sizes[1], stride=sizes[2])
        raise TypeError(f"window={value!r}: give Window(...), (input_len, horizon[, stride]) or a dict")


def window_bounds(num_rows: int, world_size: int, window: Window) -> list[int]:
    """Global row cut points that give every rank an equal share (within one) of the window starts.

    Windows start at multiples of ``stride`` up to ``num_rows - span``; rank ``r`` gets the
    rows from its first start on, and the last rank also the ``span - 1`` rows after the
    last start, which every window needs but none starts in. Balancing rows instead would
    leave the last rank short of windows (and ``even='drop'`` would skip them on the others).
    """
    starts = max((num_rows - window.span) // window.stride + 1, 0)
    return [min(starts * r // world_size * window.stride, num_rows) for r in range(world_size)] + [num_rows]


def with_halo(table: GlobalTable, rows: int) -> pa.Table:
    """This rank's partition followed by the next ``rows`` global rows (collective).

    The halo may come from several following ranks when they hold few rows; the last
    rank's halo is empty.
    """
    p, me = table.world_size, table.rank
    counts = np.array(table.row_counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    n = int(starts[-1])
    parts = []
    for dst in range(p):
        need_lo, need_hi = int(starts[dst + 1]), min(int(starts[dst + 1]) + rows, n)
        lo, hi = max(need_lo, int(starts[me])), min(need_hi, int(starts[me + 1]))
        take = dst != me and rows > 0 and hi > lo
        parts.append(table.local.slice(lo - int(starts[me]), hi - lo) if take else table.local.slice(0, 0))
    if p == 1 or rows == 0:
        return table.local
    received = exchange_tables(parts, table.comm, "window halo")
    halo = [t for src, t in enumerate(received) if src > me and t.num_rows]
    return pa.concat_tables([table.local, *halo]) if halo else table.local
