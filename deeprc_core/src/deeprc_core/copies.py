"""Every copy Deep RC makes of table data is counted here.

Zero-copy is a promise: where a path must copy (packing columns, aligning for
TensorFlow, gathering a shuffled batch, a global shuffle, combining chunks), it calls
:func:`record_copy`, which adds to a process-wide counter and logs on the
``deeprc.copies`` logger. :func:`copy_stats` shows what was copied, why and how much.
Per-batch gathers are counted but logged only once per reason, to keep logs readable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

logger = logging.getLogger("deeprc.copies")


@dataclass
class CopyStats:
    """Copies made so far: number and bytes per reason."""

    count: dict[str, int] = field(default_factory=dict)
    nbytes: dict[str, int] = field(default_factory=dict)

    @property
    def total_count(self) -> int:
        """All copies, any reason."""
        return sum(self.count.values())

    @property
    def total_bytes(self) -> int:
        """All bytes copied, any reason."""
        return sum(self.nbytes.values())


_lock = threading.Lock()
_stats = CopyStats()
_logged: set[str] = set()

#: Reasons that happen once per batch; logged once, counted always.
PER_BATCH = frozenset({"gather", "window-gather", "stack", "pad", "tf-batch", "pin", "readonly"})


def record_copy(reason: str, nbytes: int, what: str = "") -> None:
    """Count one copy of ``nbytes`` bytes for ``reason`` (and log it)."""
    with _lock:
        _stats.count[reason] = _stats.count.get(reason, 0) + 1
        _stats.nbytes[reason] = _stats.nbytes.get(reason, 0) + int(nbytes)
        first = reason not in _logged
        _logged.add(reason)
    if reason not in PER_BATCH:
        logger.info("copy (%s) of %s: %d bytes", reason, what or "data", nbytes)
    elif first:
        logger.info(
            "copy (%s) per batch, first of %s: %d bytes (further ones counted silently)", reason, what or "data", nbytes
        )


def copy_stats() -> CopyStats:
    """A snapshot of the counters."""
    with _lock:
        return CopyStats(dict(_stats.count), dict(_stats.nbytes))


def reset_copy_stats() -> None:
    """Zero the counters (tests and benchmarks)."""
    with _lock:
        _stats.count.clear()
        _stats.nbytes.clear()
        _logged.clear()


@contextmanager
def counting_copies() -> Iterator[CopyStats]:
    """Context manager yielding a CopyStats filled with the copies made inside the block."""
    before = copy_stats()
    result = CopyStats()
    try:
        yield result
    finally:
        after = copy_stats()
        for reason, n in after.count.items():
            dn = n - before.count.get(reason, 0)
            if dn:
                result.count[reason] = dn
                result.nbytes[reason] = after.nbytes[reason] - before.nbytes.get(reason, 0)
