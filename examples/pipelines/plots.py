"""PNG plots of the pipelines' results (matplotlib, non-interactive backend)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    return plt


def forecast_stretch(pred: np.ndarray, true: np.ndarray, horizon: int, windows: int) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive, non-overlapping forecasts: windows 0, H, 2H, ... joined into one series.

    ``pred``/``true`` are ``(n_windows, horizon)`` in window order (window i starts one
    step after window i-1), so window ``k*H`` forecasts the steps right after window
    ``(k-1)*H``'s.
    """
    starts = np.arange(0, min(windows * horizon, len(pred)), horizon)
    return pred[starts].reshape(-1), true[starts].reshape(-1)


def forecast_plot(
    path: str | os.PathLike[str],
    pred: np.ndarray,
    true: np.ndarray,
    horizon: int,
    title: str,
    windows: int = 7,
    ylabel: str = "oil temperature OT (°C)",
) -> Path:
    """Predicted versus true target over ``windows`` consecutive forecasts of ``horizon`` steps."""
    plt = _pyplot()
    p, t = forecast_stretch(pred, true, horizon, windows)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    steps = np.arange(len(t))
    ax.plot(steps, t, color="black", lw=1.0, label="true")
    ax.plot(steps, p, color="tab:red", lw=1.0, label="predicted")
    for k in range(0, len(t), horizon):
        ax.axvline(k, color="grey", lw=0.5, alpha=0.4)  # forecast origins
    ax.set_xlabel(f"test-set step (one forecast of {horizon} steps between grey lines)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def hydrograph_plot(
    path: str | os.PathLike[str],
    dates: Sequence[np.datetime64] | np.ndarray,
    observed: np.ndarray,
    simulated: np.ndarray,
    title: str,
) -> Path:
    """Observed versus simulated daily streamflow (mm/day); missing observations leave gaps."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.plot(dates, observed, color="black", lw=0.8, label="observed")
    ax.plot(dates, simulated, color="tab:blue", lw=0.8, alpha=0.85, label="simulated (LSTM)")
    ax.set_ylabel("streamflow (mm/day)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
