"""``make_dataset``: what ``model.fit`` needs to read this rank's partition under ``tf.distribute``.

The batches come from :class:`deeprc_core.TableBatches` (the agreed plan, shuffles,
windows, ``even=`` policies, all in the core) with ``align=64``; this module only
turns them into tensors (:func:`deeprc_tf.tensors.to_tensor`: DLPack for aligned
views, the core's aligned copy otherwise) and hands them to
``strategy.distribute_datasets_from_function``:

* each worker's pipeline yields per-replica batches of its own partition
  (``global_batch_size / num_replicas_in_sync``); auto-sharding is off, because the
  table is already partitioned;
* the stream runs epoch after epoch (a repeat, with the per-epoch reshuffle), and
  ``steps_per_epoch`` is the plan's agreed batch count — identical on every worker —
  so every worker runs the same number of steps and no worker runs out first, and
  epoch ``e`` of ``fit`` is exactly epoch ``e`` of the plan.

Pass ``steps_per_epoch`` (and ``validation_steps``) to ``fit``; the stream never
ends on its own. :meth:`DistributedData.fit_kwargs` holds all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from deeprc_core.plan import EvenPolicy
from deeprc_core.views import TF_ALIGNMENT
from deeprc_core.windows import Window

from deeprc_core import Batch, GlobalTable, TableBatches, detect_wiring

from .tensors import to_tensor


@dataclass
class Served:
    """One batch a pipeline handed to TensorFlow (kept when ``record=True``)."""

    #: how many times the pipeline had been restarted before (Keras restarts it once after building the model)
    generation: int
    epoch: int
    number: int
    #: global sample ids of the batch (rows, or windows' first rows)
    index: np.ndarray
    #: which of them repeat earlier samples (even='pad'), or None
    padded: np.ndarray | None = None


class BatchStream:
    """Endless per-replica batches of one TableBatches, epoch after epoch (one worker's pipeline)."""

    def __init__(self, batches: TableBatches, local_replicas: int = 1, record: bool = False) -> None:
        self.batches = batches
        self.local_replicas = int(local_replicas)
        self.steps = batches.num_batches
        self.generation = 0
        self.served: list[Served] | None = [] if record else None

    def element_spec(self) -> Any:
        """The ``tf.TensorSpec`` of one element, ``x`` or ``(x, y)``, from the plan's sample shapes."""
        import tensorflow as tf

        dtype = tf.as_dtype(self.batches.dtype)
        shapes = [s for s in self.batches.sample_shapes if s is not None]
        spec = tuple(tf.TensorSpec((None, *shape), dtype) for shape in shapes)
        return spec if len(spec) > 1 else spec[0]

    def __call__(self) -> Iterator[Any]:
        """A fresh pass from epoch 0 (tf.data calls this each time an iterator is made)."""
        generation, self.generation = self.generation, self.generation + 1
        epoch = 0
        while True:
            for _, batch in zip(range(self.steps), self.batches.epoch(epoch)):
                if self.served is not None:
                    self.served.append(
                        Served(generation, batch.epoch, batch.number, np.array(batch.index), batch.padded)
                    )
                yield from self._elements(batch)
            epoch += 1

    def _elements(self, batch: Batch) -> Iterator[Any]:
        xs = np.array_split(batch.x, self.local_replicas) if self.local_replicas > 1 else [batch.x]
        ys = (
            (np.array_split(batch.y, self.local_replicas) if self.local_replicas > 1 else [batch.y])
            if batch.y is not None
            else None
        )
        for i, x in enumerate(xs):
            if ys is None:
                yield to_tensor(x)
            else:
                yield to_tensor(x), to_tensor(ys[i])


@dataclass
class DistributedData:
    """A distributed dataset for ``model.fit`` and the agreed step counts (identical on every worker)."""

    dataset: Any
    steps_per_epoch: int
    global_batch_size: int
    per_replica_batch_size: int
    num_workers: int
    train: BatchStream
    validation_data: Any = None
    validation_steps: int | None = None
    validation: BatchStream | None = field(default=None)

    def fit_kwargs(self) -> dict[str, Any]:
        """``x``, ``steps_per_epoch``, ``shuffle=False`` (the plan shuffles) and any validation arguments."""
        kw: dict[str, Any] = {"x": self.dataset, "steps_per_epoch": self.steps_per_epoch, "shuffle": False}
        if self.validation_data is not None:
            kw.update(validation_data=self.validation_data, validation_steps=self.validation_steps)
        return kw

    @property
    def served(self) -> list[Served] | None:
        """Training batches handed to TensorFlow on this worker (with ``record=True``)."""
        return self.train.served


def _workers_and_replicas(strategy: Any) -> tuple[int, int]:
    total = int(strategy.num_replicas_in_sync)
    try:
        local = len(strategy.extended.worker_devices) or 1
    except RuntimeError:  # the default strategy has no worker devices: one replica
        local = 1
    return max(total // local, 1), local


def make_dataset(
    source: GlobalTable,
    features: str | Sequence[str],
    target: str | Sequence[str] | None,
    global_batch_size: int,
    *,
    strategy: Any = None,
    shuffle: bool | str = True,
    seed: int = 0,
    even: EvenPolicy = "drop",
    window: Window | Sequence[int] | dict[str, Any] | None = None,
    val: GlobalTable | None = None,
    dropna_target: bool = True,
    dtype: Any = np.float32,
    drop_last: bool = False,
    prefetch: int = 2,
    record: bool = False,
) -> DistributedData:
    """This rank's partition of ``source`` as a distributed dataset for ``model.fit`` (collective).

    ``features``/``target``/``window``/``even``/``shuffle`` mean what they mean in
    :class:`deeprc_core.TableBatches` (and deeprc-torch). ``global_batch_size`` is the
    batch of one step across all replicas; each replica gets
    ``global_batch_size / num_replicas_in_sync``. ``val`` is an optional validation
    table (same columns), read in order. ``record=True`` keeps the global ids of every
    training batch served (:attr:`DistributedData.served`), to check coverage.

    Returns :class:`DistributedData`; call ``model.fit(**data.fit_kwargs(), epochs=...)``
    or pass ``data.dataset`` with ``steps_per_epoch=data.steps_per_epoch``.
    """
    import tensorflow as tf

    strategy = tf.distribute.get_strategy() if strategy is None else strategy
    workers, local_replicas = _workers_and_replicas(strategy)
    replicas = int(strategy.num_replicas_in_sync)
    if workers != source.world_size:
        wiring = detect_wiring()
        raise ValueError(
            f"make_dataset: the table is spread over {source.world_size} ranks but the strategy "
            f"({type(strategy).__name__}) has {workers} worker(s) (wiring: {wiring.world_size} ranks). Create the "
            "strategy with deeprc_tf.strategy() first and pass it: make_dataset(..., strategy=strategy)"
        )
    if global_batch_size < replicas or global_batch_size % replicas:
        raise ValueError(
            f"make_dataset: global_batch_size={global_batch_size} must be a positive multiple of the "
            f"{replicas} replicas in sync"
        )
    per_replica = global_batch_size // replicas
    common = dict(window=window, even=even, dropna_target=dropna_target, dtype=dtype, align=TF_ALIGNMENT)
    train = BatchStream(
        TableBatches(
            source,
            features,
            target,
            per_replica * local_replicas,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            what="make_dataset",
            **common,
        ),
        local_replicas,
        record,
    )
    validation = None
    if val is not None:
        validation = BatchStream(
            TableBatches(
                val, features, target, per_replica * local_replicas, shuffle=False, what="make_dataset val", **common
            ),
            local_replicas,
        )

    distributed = workers > 1 or local_replicas > 1
    train_ds = _distribute(strategy, train, workers, prefetch) if distributed else _pipeline(train, prefetch)
    val_ds = None
    if validation is not None:
        val_ds = (
            _distribute(strategy, validation, workers, prefetch) if distributed else _pipeline(validation, prefetch)
        )
    return DistributedData(
        dataset=train_ds,
        steps_per_epoch=train.steps,
        global_batch_size=int(global_batch_size),
        per_replica_batch_size=per_replica,
        num_workers=workers,
        train=train,
        validation_data=val_ds,
        validation_steps=None if validation is None else validation.steps,
        validation=validation,
    )


def _pipeline(stream: BatchStream, prefetch: int) -> Any:
    import tensorflow as tf

    ds = tf.data.Dataset.from_generator(stream, output_signature=stream.element_spec())
    options = tf.data.Options()
    # The table is already partitioned: sharding it again would drop (workers-1)/workers of every partition.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    ds = ds.with_options(options)
    return ds.prefetch(prefetch) if prefetch else ds


def _distribute(strategy: Any, stream: BatchStream, workers: int, prefetch: int) -> Any:
    import tensorflow as tf

    rank = stream.batches.comm.rank

    def dataset_fn(ctx: tf.distribute.InputContext) -> Any:
        if ctx.num_input_pipelines != workers or ctx.input_pipeline_id != rank:
            raise ValueError(
                f"make_dataset: TensorFlow's input pipeline {ctx.input_pipeline_id} of {ctx.num_input_pipelines} "
                f"is not this rank ({rank} of {workers}); TF_CONFIG and the wiring disagree"
            )
        return _pipeline(stream, prefetch)

    return strategy.distribute_datasets_from_function(dataset_fn)
