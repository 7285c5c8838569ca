"""Distributed prediction, exactly once: every rank predicts its own samples, the results meet in global order.

Framework-agnostic (numpy in, numpy out): deeprc-torch's ``GatherPredictions`` callback
and deeprc-tf's ``predict`` are thin wrappers of :func:`gather_predictions`.

* :func:`prediction_batches` plans unshuffled ``even="pad"`` batches, so every rank runs
  the same number of batches (no collective is left waiting) and no sample is dropped;
* :func:`gather_predictions` removes the padding repeats, brings every rank's part to
  ``root`` (or to every rank with ``root=None``), sorts by global sample id and checks
  that each sample of the plan arrived exactly once — on every rank, so a broken plan
  fails the whole job, not rank 0 alone;
* :func:`predict_all` runs a ``predict(x) -> y`` function over such batches and gathers.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .batch_settings import BatchSettings, WindowSpec
from .batches import Batch, TableBatches
from .comm.base import Communicator, agree
from .table import GlobalTable


@dataclass
class Predictions:
    """Every sample's prediction once, sorted by global sample id (the row, or a window's first row)."""

    #: global sample ids, ascending, each once
    index: np.ndarray
    #: predictions, one row per sample, in the order of ``index``
    pred: np.ndarray
    #: other per-sample arrays gathered alongside (e.g. ``"true"``), same order
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)


def prediction_batches(
    source: GlobalTable,
    features: str | Sequence[str],
    target: str | Sequence[str] | None,
    batch_size: int,
    settings: BatchSettings | None = None,
    *,
    window: WindowSpec = None,
    dropna_target: bool = False,
    align: int | None = None,
    what: str = "predict",
    **options: Any,
) -> TableBatches:
    """Unshuffled, padded batches over every sample of ``source``: equal batch counts on all ranks (collective).

    ``settings`` is an adapter's :class:`~deeprc_core.batch_settings.BatchSettings` (its
    dtype and ``eval_window`` are used; :meth:`~BatchSettings.for_prediction`), or give the
    batch-setting keywords (``dtype=``). ``window`` overrides the settings' window.
    ``dropna_target=True`` leaves out samples whose target is NaN (e.g. days without an
    observation, when scoring); by default every sample is predicted. A partition too
    small to hold one sample (even='pad' needs one to repeat) is first rebalanced over
    the ranks (one counted move of the rows).
    """
    s = BatchSettings.resolve(what, settings, options).for_prediction(window, dropna_target)
    span = 1 if s.window is None else s.window.span
    if min(source.row_counts) < span:  # the same decision on every rank: row_counts is global
        source = source.rebalance()
    return TableBatches(source, features, target, batch_size, s, align=align, what=what)


def _concat(parts: Sequence[np.ndarray]) -> np.ndarray | None:
    return np.concatenate(parts) if parts else None


def gather_predictions(
    comm: Communicator,
    index: Sequence[np.ndarray] | np.ndarray,
    pred: Sequence[np.ndarray] | np.ndarray,
    *,
    padded: Sequence[np.ndarray | None] | np.ndarray | None = None,
    extra: Mapping[str, Sequence[np.ndarray] | np.ndarray] | None = None,
    expected: int | None = None,
    root: int | None = 0,
    what: str = "predictions",
) -> Predictions | None:
    """Gather this rank's predictions with every other rank's, in global order (collective).

    ``index``/``pred``/``extra`` are this rank's arrays (or lists of per-batch arrays);
    ``padded`` marks samples that are padding repeats (dropped here). ``expected`` is the
    number of distinct samples in the whole plan: the result must hold each of them once.
    Returns the :class:`Predictions` on ``root`` (every rank with ``root=None``), None elsewhere.
    """
    as_list = (lambda v: [v]) if isinstance(index, np.ndarray) else list
    idx_parts, pred_parts = as_list(index), as_list(pred)
    pad_parts = [None] * len(idx_parts) if padded is None else as_list(padded)
    extra_parts = {k: as_list(v) for k, v in (extra or {}).items()}
    keep = [slice(None) if p is None else ~np.asarray(p, dtype=bool) for p in pad_parts]
    local: dict[str, Any] = {
        "index": _concat([np.asarray(i, dtype=np.int64)[k] for i, k in zip(idx_parts, keep)]),
        "pred": _concat([np.asarray(p)[k] for p, k in zip(pred_parts, keep)]),
        "extra": {n: _concat([np.asarray(a)[k] for a, k in zip(v, keep)]) for n, v in extra_parts.items()},
    }
    if local["index"] is None:
        local["index"] = np.zeros(0, np.int64)
    parts = _bring(comm, local, root)
    err: Exception | None = None
    result: Predictions | None = None
    if parts is not None:
        try:
            result = _merge(parts, expected, what)
        except ValueError as exc:
            err = exc
    agree(comm, err, what)  # a duplicate or a missing sample fails every rank, not rank 0 alone
    return result


def _bring(comm: Communicator, local: dict[str, Any], root: int | None) -> list[dict[str, Any]] | None:
    """Every rank's part on ``root`` (others get None), or on every rank when ``root`` is None."""
    if root is None:
        return list(comm.allgather(local))
    blob = pickle.dumps(local, protocol=pickle.HIGHEST_PROTOCOL)
    got = comm.alltoall_bytes([blob if r == root else b"" for r in range(comm.size)])
    if comm.rank != root:
        return None
    return [pickle.loads(bytes(b)) for b in got]  # nosec: parts of this job's own ranks, over its communicator


def _merge(parts: list[dict[str, Any]], expected: int | None, what: str) -> Predictions:
    index = np.concatenate([p["index"] for p in parts])
    order = np.argsort(index, kind="stable")
    index = index[order]
    dup = index[1:][index[1:] == index[:-1]]
    if len(dup):
        raise ValueError(f"{what}: {len(dup)} sample(s) were predicted more than once (e.g. global id {dup[0]})")
    if expected is not None and len(index) != expected:
        raise ValueError(
            f"{what}: {len(index)} distinct samples arrived, the plan has {expected}; every sample must be "
            "predicted once (use prediction_batches: unshuffled, even='pad')"
        )
    preds = [p["pred"] for p in parts if p["pred"] is not None]
    pred = np.concatenate(preds)[order] if preds else np.zeros((0,), np.float32)
    names = set().union(*(p["extra"] for p in parts)) if parts else set()
    extra = {}
    for n in sorted(names):
        arrays = [p["extra"][n] for p in parts if p["extra"].get(n) is not None]
        extra[n] = np.concatenate(arrays)[order] if arrays else np.zeros((0,))
    return Predictions(index, pred, extra)


def predict_all(
    batches: TableBatches,
    predict: Callable[[np.ndarray], Any],
    *,
    root: int | None = 0,
    keep_targets: bool = True,
    extras: Callable[[Batch], Mapping[str, np.ndarray]] | None = None,
) -> Predictions | None:
    """Run ``predict(x)`` over this rank's batches and gather every sample once in global order (collective).

    ``batches`` should come from :func:`prediction_batches` (any unshuffled plan that drops
    nothing works). ``keep_targets`` gathers ``y`` as ``extra["true"]``; ``extras(batch)``
    adds per-sample arrays of your own (e.g. an input history for a naive baseline).
    """
    if batches.shuffle != "none":
        raise ValueError("predict_all: batches must be unshuffled (use prediction_batches)")
    idx, preds, pads = [], [], []
    more: dict[str, list[np.ndarray]] = {}
    for batch in batches.epoch(0):
        out = np.asarray(predict(batch.x))
        idx.append(batch.index)
        preds.append(out)
        pads.append(batch.padded)
        if keep_targets and batch.y is not None:
            more.setdefault("true", []).append(np.array(batch.y))
        for name, arr in (extras(batch) if extras else {}).items():
            more.setdefault(name, []).append(np.asarray(arr))
    expected = sum(batches.plan.counts)
    return gather_predictions(
        batches.comm, idx, preds, padded=pads, extra=more, expected=expected, root=root, what="predict_all"
    )
