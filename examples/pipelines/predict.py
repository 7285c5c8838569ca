"""Score every test window exactly once, on the library's exactly-once prediction (``deeprc_core.prediction``).

Framework-agnostic: the caller passes ``predict(x) -> y`` on numpy arrays (a torch or Keras
model behind it). The batches are the core's unshuffled ``even="pad"`` plan, so every rank
runs the same number of batches; the core drops the padding repeats, gathers on rank 0 in
global window order and checks that each window arrived once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import deeprc_core as drc


@dataclass
class Gathered:
    """All test windows on rank 0, sorted by their global first row."""

    index: np.ndarray
    pred: np.ndarray
    true: np.ndarray
    #: the target's input history of each window (for the naive baseline), or None
    x_target: np.ndarray | None = None


def test_batches(
    table: drc.GlobalTable,
    features: Sequence[str],
    target: str | Sequence[str],
    window: drc.Window,
    batch_size: int = 256,
) -> drc.TableBatches:
    """Every window of ``table`` whose target is observed, unshuffled and padded (collective)."""
    return drc.prediction_batches(
        table, list(features), target, batch_size, window=window, dropna_target=True, what="test windows"
    )


def predict_all(
    batches: drc.TableBatches,
    predict: Callable[[np.ndarray], np.ndarray],
    target_feature: int | None = 0,
) -> Gathered | None:
    """Run ``predict`` over this rank's windows and gather all windows on rank 0 (collective).

    Returns the gathered windows on rank 0 and None elsewhere. ``target_feature`` is the
    input column holding the target's history (kept for the naive baseline).
    """
    extras = None
    if target_feature is not None:
        extras = lambda batch: {"history": np.array(batch.x[..., target_feature])}  # noqa: E731
    got = drc.predict_all(batches, lambda x: np.asarray(predict(x), dtype=np.float32), root=0, extras=extras)
    if got is None:
        return None
    n = len(got)
    true = got.extra["true"].astype(np.float32).reshape(n, -1)
    return Gathered(got.index, got.pred.reshape(n, -1), true, got.extra.get("history"))
