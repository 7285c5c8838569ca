"""Rank bodies: a keras-io style script (callbacks, validation data, no steps_per_epoch) on 1 or N workers.

Run by ``tests/support/ranks.py`` on real processes; see ``tests/tf/test_keras_habits.py``.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROWS = 1200
FEATURES = ["f0", "f1", "f2"]


def _frame() -> Any:
    """One synthetic regression frame, the same on every rank (shard keeps each rank's share)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    x = rng.random((ROWS, 3), dtype=np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)
    return pa.table({"f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2], "y": y})


def keras_io(workdir: str, epochs: str = "2", fail_after_epoch: str = "-1", with_plan_epoch: str = "1") -> Any:
    """fit(data.dataset, epochs=N, validation_data=...) with EarlyStopping, ModelCheckpoint, BackupAndRestore."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    import deeprc_tf

    strategy = deeprc_tf.strategy()
    import keras
    import numpy as np

    from deeprc_core import GlobalTable

    table = GlobalTable.shard(_frame())
    train, val = table.split([0.75, 0.25])
    data = deeprc_tf.make_dataset(
        train, FEATURES, "y", 32, strategy=strategy, val=val, shuffle=True, seed=5, record=True
    )
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1), keras.layers.Reshape(())])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rank = train.rank
    checkpoint = deeprc_tf.ModelCheckpoint(os.path.join(workdir, "best.weights.h5"), save_weights_only=True)
    callbacks: list[Any] = [
        keras.callbacks.EarlyStopping(patience=3),
        checkpoint,
        deeprc_tf.BackupAndRestore(os.path.join(workdir, "backup")),
    ]
    if with_plan_epoch == "1":
        callbacks.append(data.callback)  # the plan's epoch follows Keras's, also after a resume
    if int(fail_after_epoch) >= 0 and rank == 1:

        class Exit(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                if epoch == int(fail_after_epoch):
                    os._exit(3)  # a worker lost after the backup of this epoch was written

        callbacks.append(Exit())
    history = model.fit(data.dataset, epochs=int(epochs), validation_data=data.validation_data, callbacks=callbacks)
    served = data.served or []
    last = max(s.generation for s in served) if served else -1
    by_epoch: dict[int, list[list[int]]] = {}
    for s in served:  # the last complete pass of each epoch (Keras's build pass reads a few batches first)
        by_epoch.setdefault(s.epoch, [])
    for e in by_epoch:
        gens = {s.generation for s in served if s.epoch == e and s.number == data.steps_per_epoch - 1}
        g = max(gens) if gens else last
        by_epoch[e] = [s.index.tolist() for s in served if s.epoch == e and s.generation == g]
    return {
        "rank": rank,
        "epochs_run": len(history.history["loss"]),
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "batches": by_epoch,
        "steps": data.steps_per_epoch,
        "cardinality": int(data.dataset.cardinality)
        if not callable(getattr(data.dataset, "cardinality", None))
        else int(data.dataset.cardinality()),
        "chief_writes": checkpoint.is_chief,
        "weights": [np.asarray(w) for w in model.get_weights()],
    }


def nan_feature() -> str:
    """make_dataset over a table with a NaN feature: the error text (every rank)."""
    import numpy as np
    import pyarrow as pa

    import deeprc_tf
    from deeprc_core import GlobalTable, RankFailedError

    frame = _frame()
    f1 = frame.column("f1").to_numpy().copy()
    f1[[5, 900]] = [np.nan, np.inf]
    frame = frame.set_column(1, "f1", pa.array(f1))
    try:
        deeprc_tf.make_dataset(GlobalTable.shard(frame), FEATURES, "y", 32)
    except (ValueError, RankFailedError) as exc:
        return str(exc)
    return "no error"
