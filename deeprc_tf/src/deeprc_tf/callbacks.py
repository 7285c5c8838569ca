"""``PlanEpoch``: keeps the plan's epoch equal to Keras's epoch across ``fit`` calls.

A fresh iterator over :attr:`DistributedData.dataset` starts at the stream's
``start_epoch``; Keras makes one per ``fit`` call, after ``on_epoch_begin`` of its first
epoch. This callback sets ``start_epoch`` to that epoch, so ``fit(initial_epoch=3)`` — or
a fit resumed by ``keras.callbacks.BackupAndRestore`` — reads plan epoch 3 (its shuffle),
not epoch 0 again. Imports keras (which picks its backend at import), so it is loaded on
demand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import keras


class EpochStream(Protocol):
    """What PlanEpoch sets: a stream whose next iterator starts at ``start_epoch`` (deeprc_tf's BatchStream)."""

    start_epoch: int


class PlanEpoch(keras.callbacks.Callback):
    """Starts each ``fit``'s pass over the streams at Keras's first epoch of that ``fit``."""

    def __init__(self, streams: Sequence[EpochStream]) -> None:
        super().__init__()
        self.streams = list(streams)

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        """Before Keras makes this fit's iterator (read once per iterator; later epochs follow in order)."""
        for stream in self.streams:
            stream.start_epoch = int(epoch)
