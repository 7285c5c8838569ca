"""Score every test window exactly once: each rank predicts its own windows, rank 0 gathers them.

Framework-agnostic: the caller passes ``predict(x) -> y`` on numpy arrays (a torch or Keras
model behind it). The batches come from the core's :class:`~deeprc_core.TableBatches`
with ``even="pad"``, so every rank runs the same number of batches; samples repeated as
padding are dropped before the gather, and rank 0 checks that each global window arrived
once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
    """Unshuffled, padded batches over every window of ``table`` (collective)."""
    return drc.TableBatches(
        table, list(features), target, batch_size, window=window, shuffle=False, even="pad", what="test windows"
    )


def predict_all(
    batches: drc.TableBatches,
    predict: Callable[[np.ndarray], np.ndarray],
    comm: drc.Communicator,
    target_feature: int | None = 0,
) -> Gathered | None:
    """Run ``predict`` over this rank's windows and gather all windows on rank 0 (collective).

    Returns the gathered windows on rank 0 and None elsewhere. ``target_feature`` is the
    input column holding the target's history (kept for the naive baseline).
    """
    idx: list[np.ndarray] = []
    preds: list[np.ndarray] = []
    trues: list[np.ndarray] = []
    hist: list[np.ndarray] = []
    for batch in batches.epoch(0):
        keep = slice(None) if batch.padded is None else ~batch.padded
        out = np.asarray(predict(batch.x), dtype=np.float32)
        y = np.asarray(batch.y, dtype=np.float32)
        idx.append(np.asarray(batch.index)[keep])
        preds.append(out.reshape(len(out), -1)[keep])
        trues.append(y.reshape(len(y), -1)[keep])
        if target_feature is not None:
            hist.append(np.array(batch.x[..., target_feature])[keep])
    local: dict[str, Any] = {
        "index": np.concatenate(idx) if idx else np.zeros(0, np.int64),
        "pred": np.concatenate(preds) if preds else None,
        "true": np.concatenate(trues) if trues else None,
        "hist": np.concatenate(hist) if hist else None,
    }
    parts = comm.allgather(local if comm.rank != 0 else None)  # rank 0 keeps its own part in hand
    if comm.rank != 0:
        return None
    parts[0] = local
    parts = [p for p in parts if p is not None and p["pred"] is not None]
    index = np.concatenate([p["index"] for p in parts])
    order = np.argsort(index, kind="stable")
    index = index[order]
    if len(np.unique(index)) != len(index):
        raise AssertionError("a test window was predicted twice; the exactly-once gather is broken")
    pred = np.concatenate([p["pred"] for p in parts])[order]
    true = np.concatenate([p["true"] for p in parts])[order]
    x_target = np.concatenate([p["hist"] for p in parts])[order] if target_feature is not None else None
    return Gathered(index, pred, true, x_target)
