"""``deeprc_tf.predict``: a Keras model over every sample of a global table, each predicted once, in global order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from deeprc_core.adapter import Source, resolve_source
from deeprc_core.prediction import Predictions, predict_all, prediction_batches
from deeprc_core.views import TF_ALIGNMENT
from deeprc_core.windows import Window

from .tensors import to_tensor


def predict(
    model: Any,
    source: Source,
    features: str | Sequence[str],
    target: str | Sequence[str] | None = None,
    *,
    batch_size: int = 256,
    window: Window | Sequence[int] | dict[str, Any] | None = None,
    dropna_target: bool = False,
    root: int | None = 0,
) -> Predictions | None:
    """Predict every sample of ``source`` once with ``model`` and gather them in global order (collective).

    Each rank runs the model on its own partition (unshuffled, ``even="pad"``, so every
    worker runs the same number of batches); padding is removed and each sample is checked
    to arrive once (:mod:`deeprc_core.prediction`). Returns
    :class:`~deeprc_core.Predictions` (``index``, ``pred``, ``extra["true"]`` when
    ``target`` is given) on ``root``, or on every rank with ``root=None``; None elsewhere.
    ``features``/``window`` must be what the model was trained on (e.g. ``make_dataset``'s).
    """
    import tensorflow as tf

    table = resolve_source(source, "deeprc_tf.predict")
    batches = prediction_batches(
        table,
        features,
        target,
        batch_size,
        window=window,
        dropna_target=dropna_target,
        align=TF_ALIGNMENT,
        what="deeprc_tf.predict",
    )
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return predict_all(batches, lambda x: np.asarray(forward(to_tensor(x))), root=root)
