"""How much CPU the hypervisor took from this VM while a benchmark ran (Linux ``/proc/stat``).

On a shared VM the host "steals" time from its virtual CPUs, and on a capped one it steals
more when every vCPU is busy: a loader that keeps two cores busy (a stacking thread beside the
training loop) then loses more than a baseline on one core. The benchmarks record each run's
steal beside its time so that this is visible; their figures are always over all runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _cpu_ticks() -> list[int] | None:
    """The machine's CPU ticks by state (user, nice, system, idle, iowait, irq, softirq, steal, ...)."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None


class StealMeter:
    """The share of all CPUs' time stolen between :meth:`start` and :meth:`stop` (None off Linux)."""

    def start(self) -> None:
        """Begin measuring."""
        self._t0 = _cpu_ticks()

    def stop(self) -> float | None:
        """The stolen share of the CPU time since :meth:`start`, 0..1."""
        t1 = _cpu_ticks()
        if self._t0 is None or t1 is None or len(t1) < 8:
            return None
        delta = [b - a for a, b in zip(self._t0, t1)]
        total = sum(delta[:8])  # guest time is already inside user
        return delta[7] / total if total > 0 else 0.0


def median_steal(runs: Sequence[dict[str, Any]]) -> float | None:
    """The median ``steal_share`` of ``runs`` (None when no run could measure it)."""
    known = [r["steal_share"] for r in runs if r.get("steal_share") is not None]
    return statistics.median(known) if known else None
