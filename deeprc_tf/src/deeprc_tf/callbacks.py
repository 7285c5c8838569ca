"""Keras callbacks for several workers: ``PlanEpoch``, ``BackupAndRestore`` and ``ModelCheckpoint``.

``PlanEpoch`` keeps the plan's epoch equal to Keras's epoch across ``fit`` calls.

A fresh iterator over :attr:`DistributedData.dataset` starts at the stream's
``start_epoch``; Keras makes one per ``fit`` call, after ``on_epoch_begin`` of its first
epoch. This callback sets ``start_epoch`` to that epoch, so ``fit(initial_epoch=3)`` — or
a fit resumed by ``keras.callbacks.BackupAndRestore`` — reads plan epoch 3 (its shuffle),
not epoch 0 again. Imports keras (which picks its backend at import), so it is loaded on
demand.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

import keras
from deeprc_core.wiring import detect_wiring


class EpochStream(Protocol):
    """What PlanEpoch sets: a stream whose next iterator starts at ``start_epoch`` (deeprc_tf's EpochPipeline)."""

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


def _worker() -> tuple[int, int]:
    """(rank, world size) of this worker, from the launcher's variables."""
    wiring = detect_wiring()
    return wiring.rank, wiring.world_size


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore with one ``backup_dir`` for every worker.

    Keras 3 writes the same files from every worker of a MultiWorkerMirroredStrategy job,
    and HDF5 refuses the second writer (``BlockingIOError: unable to lock file``). Here each
    worker of an N-worker job keeps its own copy in ``backup_dir/worker-<rank>`` (weights are
    identical across workers, so every copy restores the same state, with or without a
    shared file system); one worker runs as Keras's own, in ``backup_dir`` itself.
    """

    def __init__(self, backup_dir: str, *args: Any, **kwargs: Any) -> None:
        rank, world = _worker()
        super().__init__(os.path.join(backup_dir, f"worker-{rank}") if world > 1 else backup_dir, *args, **kwargs)


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras's ModelCheckpoint, written once: by the chief (rank 0) of an N-worker job.

    The other workers hold the same weights and skip the write (Keras 3 would write the same
    file from every worker); ``save_best_only`` still compares on every worker alike.
    """

    def __init__(self, filepath: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(filepath, *args, **kwargs)
        self.is_chief = _worker()[0] == 0

    def _save_model(self, epoch: int, batch: Any, logs: Any) -> None:
        if self.is_chief:
            super()._save_model(epoch, batch, logs)
