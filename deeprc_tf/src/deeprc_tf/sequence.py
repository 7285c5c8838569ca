"""``DeepRCSequence``: a ``keras.utils.PyDataset`` over a GlobalTable, for single-process Keras.

Works on every Keras backend (TensorFlow, JAX, PyTorch): ``__getitem__`` returns the
core's numpy views of batch ``i`` of the plan (``(x, y)`` or ``x``), so Keras's own
adapter turns them into its framework's tensors. On the TensorFlow backend the views
are 64-byte aligned (``align=64``), the alignment TensorFlow needs to wrap rather than
copy a numpy buffer. For several processes under ``tf.distribute`` use
:func:`deeprc_tf.make_dataset` instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import keras
from deeprc_core.adapter import Source, resolve_source, warn_plan
from deeprc_core.batch_settings import BatchOptions, BatchSettings
from deeprc_core.views import TF_ALIGNMENT

from deeprc_core import Batch, TableBatches

if TYPE_CHECKING:
    from typing_extensions import Unpack


class DeepRCSequence(keras.utils.PyDataset):
    """Batches of this rank's partition, in the agreed plan's order, as numpy views.

    The batch settings are the core's (:class:`~deeprc_core.batch_settings.BatchSettings`,
    as in :func:`deeprc_tf.make_dataset`; ``batch_size`` is this process's batch);
    ``workers``, ``use_multiprocessing`` and ``max_queue_size`` go to ``keras.utils.PyDataset``. Each Keras epoch (``on_epoch_end``) starts the plan's
    next epoch, so ``shuffle=True`` gives a new order every epoch.
    """

    def __init__(
        self,
        source: Source,
        features: str | Sequence[str],
        target: str | Sequence[str] | None,
        batch_size: int,
        *,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
        **options: Unpack[BatchOptions],
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        settings = BatchSettings.from_options("DeepRCSequence", options)
        align = TF_ALIGNMENT if keras.backend.backend() == "tensorflow" else None
        self.batches = TableBatches(
            resolve_source(source, "DeepRCSequence"),
            features,
            target,
            batch_size,
            settings,
            align=align,
            what="DeepRCSequence",
        )
        warn_plan(self.batches, "DeepRCSequence")
        self.epoch = 0
        self._lock = threading.Lock()
        self._iter: Iterator[Batch] | None = None
        self._next = -1

    def __len__(self) -> int:
        return self.batches.num_batches

    def batch(self, index: int) -> Batch:
        """Batch ``index`` of the current epoch, with its global ids (sequential reads are cheapest)."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"DeepRCSequence has {n} batches per epoch; batch {index} does not exist")
        with self._lock:
            if self._iter is None or index != self._next:
                self._iter = self.batches.epoch(self.epoch, index)
            batch = next(self._iter)
            self._next = index + 1
        return batch

    def __getitem__(self, index: int) -> Any:
        batch = self.batch(index)
        return batch.x if batch.y is None else (batch.x, batch.y)

    def on_epoch_end(self) -> None:
        """Move on to the plan's next epoch (a new shuffle)."""
        with self._lock:
            self.epoch += 1
            self._iter = None
