"""deeprc-tf: Deep RC global tables for Keras 3 and ``tf.distribute``.

Call :func:`strategy` first (before any TensorFlow op), build the model in its
scope, feed ``model.fit`` from :func:`make_dataset`::

    strategy = deeprc_tf.strategy()
    data = deeprc_tf.make_dataset(table, features, target, global_batch_size=256, strategy=strategy)
    with strategy.scope():
        model = build_model()
    model.fit(data.dataset, epochs=3)  # the dataset knows its steps (every worker the same)
    got = deeprc_tf.predict(model, data)  # every row of the table once, in global order, on rank 0

:class:`DeepRCSequence` (a ``keras.utils.PyDataset``) serves single-process Keras on any
backend. Nothing here imports torch or deeprc-torch.
"""

from __future__ import annotations

from typing import Any

from .cluster import derive_tf_config
from .dataset import DistributedData, EpochPipeline, Served, make_dataset
from .keras_compat import KerasPatchError, patch_keras
from .predict import predict
from .startup import TFAlreadyStartedError, tf_has_started
from .strategy import strategy
from .tensors import dlpack_ready, tf_ready, to_tensor

__version__ = "0.1.0"

__all__ = [
    "BackupAndRestore",
    "EpochPipeline",
    "ModelCheckpoint",
    "DeepRCSequence",
    "DistributedData",
    "KerasPatchError",
    "PlanEpoch",
    "Served",
    "TFAlreadyStartedError",
    "derive_tf_config",
    "dlpack_ready",
    "make_dataset",
    "patch_keras",
    "predict",
    "strategy",
    "tf_has_started",
    "tf_ready",
    "to_tensor",
]


def __getattr__(name: str) -> Any:
    if name == "DeepRCSequence":  # imports keras, which picks its backend at import: only on demand
        from .sequence import DeepRCSequence

        return DeepRCSequence
    if name in ("PlanEpoch", "BackupAndRestore", "ModelCheckpoint"):  # keras callbacks: imported on demand
        from . import callbacks

        return getattr(callbacks, name)
    raise AttributeError(f"module 'deeprc_tf' has no attribute {name!r}")
