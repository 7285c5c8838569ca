"""Memory readings the benchmarks share: this process's RSS and its kernel peak, the machine's
used memory, and a thread that keeps the peak of any of them.

Linux only (``/proc``); where a file cannot be read the readings fall back to ``getrusage``.
"""

from __future__ import annotations

import resource
import threading
from collections.abc import Callable


def _status_kb(field: str) -> int:
    """One ``/proc/self/status`` field (``VmRSS``, ``VmHWM``), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss() -> int:
    """This process's resident set, in bytes."""
    return _status_kb("VmRSS") * 1024


def peak_rss() -> int:
    """This process's peak resident set (``VmHWM``, or ``ru_maxrss`` where unreadable), in bytes."""
    try:
        return _status_kb("VmHWM") * 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine_used() -> int:
    """The machine's used memory (``MemTotal - MemAvailable``), in bytes: counts other processes too."""
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


class PeakSampler:
    """Samples ``measure()`` in a thread while in the ``with`` block; ``peak`` is the largest seen.

    ``base`` is the reading on entry; ``growth`` the peak above it. The last reading is taken
    on exit, so a block shorter than ``every`` still counts its end.
    """

    def __init__(self, measure: Callable[[], int] = rss, every: float = 0.005) -> None:
        self.measure = measure
        self.every = every
        self.base = self.peak = measure()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.measure())

    def __enter__(self) -> PeakSampler:
        self.base = self.peak = self.measure()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.measure())

    @property
    def growth(self) -> int:
        """Bytes of peak above the reading on entry."""
        return max(self.peak - self.base, 0)
