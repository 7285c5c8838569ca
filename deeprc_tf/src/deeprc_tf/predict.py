"""``deeprc_tf.predict``: a Keras model over every sample of a global table, each predicted once, in global order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from deeprc_core.adapter import Source, resolve_source
from deeprc_core.batch_settings import BatchSettings
from deeprc_core.prediction import Predictions, predict_all, prediction_batches
from deeprc_core.views import TF_ALIGNMENT
from deeprc_core.windows import Window

from .dataset import DistributedData
from .tensors import to_tensor

#: the batch size of a prediction over a table when none is given
DEFAULT_BATCH_SIZE = 256


def predict(
    model: Any,
    source: Source | DistributedData,
    features: str | Sequence[str] | None = None,
    target: str | Sequence[str] | None = None,
    *,
    batch_size: int | None = None,
    window: Window | Sequence[int] | dict[str, Any] | None = None,
    dropna_target: bool = False,
    root: int | None = 0,
) -> Predictions | None:
    """Predict every sample of ``source`` once with ``model`` and gather them in global order (collective).

    ``source`` is what :func:`make_dataset` takes (a GlobalTable, a path or a function), or
    the :class:`DistributedData` it returned: then the same table, features, target, dtype
    and evaluation window (``eval_window``, default ``window``) as in training, in batches
    of the worker's training batch, unless given here. Each rank runs the model on its own
    partition (unshuffled, ``even="pad"``, so every worker runs the same number of
    batches); padding is removed and each sample is checked to arrive once
    (:mod:`deeprc_core.prediction`). Returns :class:`~deeprc_core.Predictions` (``index``,
    ``pred``, ``extra["true"]`` when there is a target) on ``root``, or on every rank with
    ``root=None``; None elsewhere. Over a table, ``features``/``window`` must be what the
    model was trained on (``batch_size`` defaults to 256).
    """
    import tensorflow as tf

    if isinstance(source, DistributedData):
        data = source
        if data.table is None or data.settings is None:
            raise TypeError(
                "deeprc_tf.predict: this DistributedData does not hold its table; pass the table, features and "
                "target instead (or build the data with deeprc_tf.make_dataset)"
            )
        settings = data.settings
        table = data.table
        features = data.train.batches.features if features is None else features
        target = data.train.batches.target if target is None else target
        batch_size = data.per_worker_batch_size if batch_size is None else batch_size
    else:
        if features is None:
            raise TypeError(
                "deeprc_tf.predict: give features= (the model's input columns), or pass make_dataset's "
                "DistributedData to predict over its table with its columns"
            )
        settings = BatchSettings()  # float32, no window unless given
        table = resolve_source(source, "deeprc_tf.predict")
    batches = prediction_batches(
        table,
        features,
        target,
        DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
        settings,
        window=window,
        dropna_target=dropna_target,
        align=TF_ALIGNMENT,
        what="deeprc_tf.predict",
    )
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return predict_all(batches, lambda x: np.asarray(forward(to_tensor(x))), root=root)
