"""GatherPredictions: ``trainer.predict`` with DeepRCDataModule, every row once, in global row order.

The shared logic of the Lightning callback (``deeprc_torch.GatherPredictions`` for
``import lightning``, ``deeprc_torch.pl.GatherPredictions`` for ``pytorch_lightning``).
The DataModule's predict plan is unshuffled and padded (``even="pad"``), so every rank
runs the same number of predict steps; the callback pairs each step's output with the
plan's global sample ids, drops the padding repeats and gathers through the core
(:func:`deeprc_core.gather_predictions`, which checks that each sample arrives once).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from deeprc_core.prediction import Predictions, gather_predictions

from deeprc_core import EpochRows, TableBatches


class GatherPredictionsLogic:
    """Everything GatherPredictions does (a mixin before Lightning's ``Callback``).

    ``root``: the rank that receives the gathered predictions (None: every rank). After
    ``trainer.predict(model, datamodule=dm)`` the result is in :attr:`predictions` there
    (None on other ranks). ``predict_step`` must return one tensor with a row per sample.
    """

    def __init__(self, root: int | None = 0) -> None:
        super().__init__()
        self.root = root
        #: the gathered predictions after ``trainer.predict`` (on ``root``), else None
        self.predictions: Predictions | None = None
        self._batches: TableBatches | None = None
        self._rows: EpochRows | None = None
        self._parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray | None]] = ([], [], [])

    def on_predict_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Take the DataModule's predict plan in index form (which global samples each step holds)."""
        batches = getattr(getattr(trainer, "datamodule", None), "batches", {}).get("predict")
        if batches is None:
            raise TypeError(
                "GatherPredictions needs trainer.predict(model, datamodule=DeepRCDataModule(..., predict=...))"
            )
        self._batches, self._rows = batches, batches.epoch_rows(0)
        self._parts, self.predictions = ([], [], []), None

    def on_predict_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Pair this step's output rows with the plan's global sample ids and padding mask."""
        assert self._batches is not None and self._rows is not None
        if not isinstance(outputs, torch.Tensor):
            raise TypeError(
                f"GatherPredictions: predict_step returned {type(outputs).__name__}; return one tensor, a row per sample"
            )
        rows = self._rows
        lo, hi = int(rows.bounds[batch_idx]), int(rows.bounds[batch_idx + 1])
        if len(outputs) != hi - lo:
            raise ValueError(f"GatherPredictions: predict step {batch_idx} returned {len(outputs)} rows for {hi - lo}")
        picked: slice | np.ndarray = slice(lo, hi) if rows.rows is None else rows.rows[lo:hi]
        index, pred, padded = self._parts
        index.append(self._batches.global_ids(picked))
        pred.append(outputs.detach().cpu().numpy())
        padded.append(None if rows.padded is None else rows.padded[lo:hi])

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Gather every rank's predictions in global order (collective); each sample must arrive once."""
        assert self._batches is not None
        index, pred, padded = self._parts
        self.predictions = gather_predictions(
            self._batches.comm,
            index,
            pred,
            padded=padded,
            expected=sum(self._batches.plan.counts),
            root=self.root,
            what="GatherPredictions",
        )
