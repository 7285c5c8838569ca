"""Forecast and hydrology metrics (numpy only), plus the naive baselines they are judged against."""

from __future__ import annotations

import numpy as np


def _finite(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {true.shape}")
    ok = np.isfinite(true)  # missing observations (NaN) are masked, never scored
    return pred[ok], true[ok]


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error over the finite truth values."""
    p, t = _finite(pred, true)
    return float(np.mean(np.abs(p - t)))


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean squared error over the finite truth values."""
    p, t = _finite(pred, true)
    return float(np.mean((p - t) ** 2))


def mape(pred: np.ndarray, true: np.ndarray, eps: float = 1e-8) -> float:
    """Mean absolute percentage error in percent, over points whose truth is not ~0.

    Undefined where the truth is zero; such points (``|true| <= eps``) are left out. It
    explodes where the truth is close to zero (winter oil temperatures near 0 C), so read it
    beside MAE and MSE.
    """
    p, t = _finite(pred, true)
    keep = np.abs(t) > eps
    return float(100.0 * np.mean(np.abs((p[keep] - t[keep]) / t[keep])))


def nse(sim: np.ndarray, obs: np.ndarray) -> float:
    """Nash-Sutcliffe efficiency: 1 - SSE / variance of the observations around their mean.

    1 is perfect; 0 is as good as predicting the observed mean (the naive baseline);
    missing observations (NaN) are left out.
    """
    s, o = _finite(sim, obs)
    denom = float(np.sum((o - o.mean()) ** 2))
    return float(1.0 - np.sum((s - o) ** 2) / denom) if denom > 0 else float("nan")


def nnse(nse_value: float) -> float:
    """Normalised NSE, ``1 / (2 - NSE)``: maps (-inf, 1] to (0, 1], 0.5 at the mean-flow baseline."""
    return float(1.0 / (2.0 - nse_value))


def forecast_scores(
    pred: np.ndarray, true: np.ndarray, pred_orig: np.ndarray, true_orig: np.ndarray
) -> dict[str, float]:
    """MAE and MSE on the normalised scale (as the literature reports them), MAPE on the original one."""
    return {"mae": mae(pred, true), "mse": mse(pred, true), "mape": mape(pred_orig, true_orig)}


def last_value_forecast(x_target: np.ndarray, horizon: int) -> np.ndarray:
    """Naive forecast: the last observed target value repeated ``horizon`` times.

    ``x_target`` is ``(windows, input_len)``, the target's input history.
    """
    return np.repeat(x_target[:, -1:], horizon, axis=1)
