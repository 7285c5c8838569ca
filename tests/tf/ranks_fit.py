"""Rank bodies: Keras 3 ``model.fit`` of a small LSTM on CAMELS under MultiWorkerMirroredStrategy.

Run by ``tests/support/ranks.py`` on real processes (env-wired or ``mpirun``).
"""

from __future__ import annotations

import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: rank -> basin positions: deliberately uneven (3 basins vs 1)
UNEVEN = {0: [0, 1, 2], 1: [3]}


def basins_of(rank: int, world: int) -> list[int]:
    """Basin positions of ``rank``: UNEVEN for 2 workers, one basin each for 4 (the cluster tests)."""
    return UNEVEN[rank] if world == 2 else [rank]


WINDOW = 30
GLOBAL_BATCH = 64


def _threads() -> None:
    import tensorflow as tf

    # Before the strategy: these are configuration, not ops, and must precede TF's start.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)


def _model(strategy: Any) -> Any:
    import keras

    class SampleCount(keras.metrics.Metric):
        """Samples trained on (per replica; Keras averages replicas in the logs)."""

        def __init__(self, name: str = "samples", **kw: Any) -> None:
            super().__init__(name=name, **kw)
            self.count = self.add_variable(shape=(), initializer="zeros", name="count", aggregation="sum")

        def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
            self.count.assign_add(keras.ops.cast(keras.ops.shape(y_true)[0], "float32"))

        def result(self) -> Any:
            return self.count * 1.0  # a snapshot: logs must not follow later updates

    keras.utils.set_random_seed(7)
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((WINDOW, 6)), keras.layers.LSTM(8), keras.layers.Dense(1), keras.layers.Reshape((1, 1))]
        )
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=[SampleCount()])
    return model


def fit_camels(even: str = "pad", fail_rank: str = "-1") -> dict[str, Any]:
    """Create the strategy first, read this rank's basins, fit one epoch; report what happened."""
    _threads()
    import deeprc_tf

    t0 = time.monotonic()
    strategy = deeprc_tf.strategy()
    import camels
    import numpy as np

    from deeprc_core import GlobalTable, Window, get_communicator

    comm = get_communicator()
    rank = comm.rank
    local = camels.read_basins(basins_of(rank, comm.size))
    table = GlobalTable.from_arrow(local)
    # validation: a zero-copy slice at an odd offset (its buffers start misaligned)
    val = GlobalTable.from_arrow(local.slice(3, 300))
    window = Window(WINDOW, 1, offset=-1, group="basin")
    data = deeprc_tf.make_dataset(
        table,
        camels.FEATURES,
        camels.TARGET,
        GLOBAL_BATCH,
        strategy=strategy,
        shuffle=True,
        seed=3,
        even=even,
        window=window,
        val=val,
        record=True,
    )
    model = _model(strategy)
    before = [w.copy() for w in model.get_weights()]
    callbacks = []
    if int(fail_rank) == rank:
        import keras

        class Boom(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                if batch == 3:
                    raise RuntimeError(f"rank {rank} fails on purpose at batch {batch}")

        callbacks.append(Boom())
    history = model.fit(**data.fit_kwargs(callbacks), epochs=1, verbose=0)
    served = data.served or []
    # the last iterator that read epoch 0 to its end (Keras's model-building pass reads a few batches first)
    last = max(s.generation for s in served if s.epoch == 0 and s.number == data.steps_per_epoch - 1)
    epoch0 = [s for s in served if s.generation == last and s.epoch == 0]
    return {
        "rank": rank,
        "steps": data.steps_per_epoch,
        "validation_steps": data.validation_steps,
        "numbers": sorted(s.number for s in epoch0),
        "index": np.concatenate([s.index for s in epoch0]),
        "padded": np.concatenate([np.zeros(len(s.index), bool) if s.padded is None else s.padded for s in epoch0]),
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "weights": model.get_weights(),
        "before": before,
        "strategy": type(strategy).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
        "tf_config": os.environ.get("TF_CONFIG"),
        "seconds": time.monotonic() - t0,
    }


#: rows per rank of the full-batch regression in one_step
STEP_ROWS = 128


def step_data(rank: int) -> Any:
    """Rank ``rank``'s rows of a fixed regression problem (features a, b; target y)."""
    import numpy as np

    rng = np.random.default_rng(100 + rank)
    a, b = rng.random(STEP_ROWS, dtype=np.float32), rng.random(STEP_ROWS, dtype=np.float32)
    return {"a": a, "b": b, "y": (2 * a - b + 0.5).astype(np.float32)}


def one_step(output: str) -> dict[str, Any]:
    """One full-batch SGD step from zero weights, model output ``(B,)`` ("flat") or ``(B, 1)`` ("column")."""
    _threads()
    import deeprc_tf

    strategy = deeprc_tf.strategy()
    import keras
    import pyarrow as pa

    from deeprc_core import GlobalTable, get_communicator

    comm = get_communicator()
    table = GlobalTable.from_arrow(pa.table(step_data(comm.rank)))
    data = deeprc_tf.make_dataset(table, ["a", "b"], "y", 2 * STEP_ROWS, strategy=strategy, shuffle=False)
    with strategy.scope():
        layers = [keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")]
        model = keras.Sequential(layers + ([keras.layers.Reshape(())] if output == "flat" else []))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    history = model.fit(**data.fit_kwargs(), epochs=1, verbose=0)
    kernel, bias = model.get_weights()
    # every row once, in global order, on every rank (batches of 50: padding on the last one)
    got = deeprc_tf.predict(model, table, ["a", "b"], "y", batch_size=50, root=None)
    # over make_dataset's data: its table, columns and per-worker batch; gathered on rank 0 only
    over_data = deeprc_tf.predict(model, data)
    return {
        "steps": data.steps_per_epoch,
        "loss": history.history["loss"][0],
        "kernel": kernel,
        "bias": bias,
        "pred_index": got.index,
        "pred": got.pred,
        "pred_true": got.extra["true"],
        "data_pred": None if over_data is None else over_data.pred,
        "data_index": None if over_data is None else over_data.index,
    }
