"""``make_dataset``: what ``model.fit`` needs to read this rank's partition under ``tf.distribute``.

The plan comes from :class:`deeprc_core.TableBatches` (the agreed batch counts, shuffles,
windows, ``even=`` policies, all in the core) with ``align=64``; this module cuts the
batches *inside* tf.data, so that Python runs once per epoch, not once per batch:

* once per epoch, a ``tf.py_function`` hands TensorFlow the partition's arrays
  (:meth:`~deeprc_core.TableBatches.arrays`) as DLPack tensors over the Arrow buffers (no
  copy; :func:`deeprc_tf.tensors.to_tensor` copies, counted, only a misaligned buffer);
* the epoch's rows in index form (:meth:`~deeprc_core.TableBatches.epoch_rows`) come a
  chunk of ~64k rows at a time, one ``tf.py_function`` per chunk, so a shuffled epoch's
  order is never held whole (under ``shuffle='global'``, whose epochs reload the table,
  the first call gives the whole epoch's rows with its tensors);
* each batch is then a graph op over those tensors: a slice for unshuffled rows (TF
  shares 64-byte-aligned slices, copies others), a ``tf.gather`` for shuffled, padded or
  filtered rows and windows (one copy of that batch), a ``tf.stack`` for a list of
  feature columns in order (one copy of the batch; the table itself is never packed).
  Those per-batch copies are counted per epoch in :func:`deeprc_core.copy_stats`;
* a list of feature columns whose batches are *not* consecutive rows (shuffled, padded,
  filtered; not windows, not ``shuffle='global'``) is the exception: there TensorFlow's 16
  gathers and a stack per batch cost ~5x the core's compiled stacker, so one
  ``tf.py_function`` per group of ~512 KiB of batches takes the group from
  :meth:`~deeprc_core.TableBatches.stacked_groups` (stacked ahead in the kernel's native
  threads, counted per group) and the graph slices its batches out of it.

Under ``tf.distribute`` the per-worker pipeline goes to
``strategy.distribute_datasets_from_function``:

* each worker's pipeline yields per-replica batches of its own partition
  (``global_batch_size / num_replicas_in_sync``); auto-sharding is off, because the
  table is already partitioned;
* each pass over the dataset (each iterator) is one epoch of the plan, of a known size:
  ``dataset.cardinality()`` is the plan's agreed batch count — identical on every
  worker — so ``model.fit(data.dataset, epochs=N)``, ``evaluate`` and ``predict`` need no
  ``steps_per_epoch``, every worker runs the same number of steps and no worker runs
  out first. A pass that reads its epoch to the end moves the next pass to the next
  epoch (its reshuffle); with :attr:`DistributedData.callback` (``fit_kwargs()`` adds it)
  the plan's epoch is Keras's epoch exactly, also after ``initial_epoch=`` or a resume by
  ``BackupAndRestore``.

``model.fit(**data.fit_kwargs(), epochs=N)`` passes ``steps_per_epoch`` and the callback too.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from deeprc_core.adapter import Source, resolve_source, warn_plan
from deeprc_core.batch_settings import BatchOptions, BatchSettings
from deeprc_core.plan import positive_int
from deeprc_core.views import TF_ALIGNMENT, aligned_empty, is_aligned

from deeprc_core import EpochRows, GlobalTable, TableBatches, detect_wiring, record_copy

from .tensors import to_tensor

if TYPE_CHECKING:
    from typing_extensions import Unpack


@dataclass
class Served:
    """One batch of a pipeline's plan, recorded (with ``record=True``) when TensorFlow asked for its epoch."""

    #: how many times the pipeline had been restarted before (Keras restarts it once after building the model)
    generation: int
    epoch: int
    number: int
    #: global sample ids of the batch (rows, or windows' first rows)
    index: np.ndarray
    #: which of them repeat earlier samples (even='pad'), or None
    padded: np.ndarray | None = None


def _index_for_tf(rows: np.ndarray, dtype: type) -> np.ndarray:
    """``rows`` as ``dtype`` in an aligned buffer: itself when it already is, else one cast-and-align copy.

    An index, not data: not counted as a copy.
    """
    if rows.dtype == dtype and (rows.size == 0 or is_aligned(rows)):
        return rows
    out = aligned_empty(rows.shape, dtype)
    out[...] = rows
    return out


def split_bounds(bounds: np.ndarray, parts: int) -> np.ndarray:
    """Cut every batch ``bounds[b]:bounds[b+1]`` into ``parts`` consecutive pieces, sized like ``np.array_split``."""
    if parts == 1:
        return bounds
    size = np.diff(bounds)
    q, r = np.divmod(size, parts)
    sizes = q[:, None] + (np.arange(parts)[None, :] < r[:, None])
    return np.concatenate([bounds[:1], bounds[0] + np.cumsum(sizes.ravel())])


class EpochPipeline:
    """Per-replica batches of one TableBatches, one epoch per pass, cut inside tf.data (one worker's pipeline).

    Python runs once per epoch (the plan and the tensors over the partition); every
    batch is a slice or gather in TensorFlow's own threads. Each fresh iterator (``fit``
    makes one per epoch, and Keras one more to build the model) reads epoch
    :attr:`start_epoch`; an iterator that reaches the end of its epoch advances it.
    """

    def __init__(self, batches: TableBatches, local_replicas: int = 1, record: bool = False) -> None:
        self.batches = batches
        self.local_replicas = int(local_replicas)
        self.steps = batches.num_batches
        #: the plan epoch a fresh iterator starts at (:class:`deeprc_tf.PlanEpoch` keeps it equal to Keras's epoch)
        self.start_epoch = 0
        #: iterators made so far
        self.generation = 0
        self.served: list[Served] | None = [] if record else None
        self._lock = threading.Lock()
        arrays = batches.arrays()
        self._num_x = len(arrays.x)
        self._stack_x = arrays.stack_x
        self._has_y = arrays.y is not None
        self._window = arrays.window
        self._in_order = batches.in_order
        rows = len(arrays.x[0])
        # int32 rows halve the plan's memory; leave headroom for a global shuffle moving rows in
        self._index_dtype = np.int32 if rows < 2**30 else np.int64
        # Separate feature columns whose batches are not consecutive rows (shuffled, padded, filtered): the
        # core stacks them a group at a time (its compiled kernel, in native threads ahead), one py_function
        # per group; TensorFlow's per-column tf.gather + tf.stack is ~5x slower per batch.
        # (Not under shuffle='global': its epochs reload the table, and tf.data overlaps epochs.)
        self._grouped = self._stack_x and self._window is None and not self._in_order and batches.shuffle != "global"
        self._group_bytes = GROUP_BYTES
        self._group_size = batches.group_size(self._group_bytes) if self._grouped else 0
        # Other gathered epochs take their rows a chunk at a time: an epoch's whole index (4 bytes a sample)
        # would be the largest thing this pipeline holds. Not under shuffle='global': the rows belong to the
        # table that epoch loaded, and tf.data overlaps epochs.
        self._chunked = not self._grouped and not self._in_order and batches.shuffle != "global"
        self._chunk_batches = max(1, CHUNK_ROWS // batches.batch_size)
        #: open group streams, by (iterator generation, epoch)
        self._open: dict[tuple[int, int], Any] = {}

    def element_spec(self) -> Any:
        """The ``tf.TensorSpec`` of one element, ``x`` or ``(x, y)``, from the plan's sample shapes."""
        import tensorflow as tf

        dtype = tf.as_dtype(self.batches.dtype)
        shapes = [s for s in self.batches.sample_shapes if s is not None]
        spec = tuple(tf.TensorSpec((None, *shape), dtype) for shape in shapes)
        return spec if len(spec) > 1 else spec[0]

    # ------------------------------------------------------------------ per epoch, in Python
    def epoch_tensors(self, epoch: Any, generation: Any) -> list[Any]:
        """The partition's tensors, and the epoch's rows with per-replica bounds unless they come by chunks.

        Run by ``tf.py_function`` once per epoch. Chunked epochs get an empty index and
        bounds here and their rows from :meth:`chunk_tensors`.
        """
        e = int(epoch)
        with self._lock:  # iterators of one stream (Keras's build pass, fit) never reload the table at once
            if self._chunked:
                plan = None
                self.batches.prepare_epoch(e)  # checks the epoch; collective work there is none
            else:
                plan = self.batches.epoch_rows(e)  # collective for shuffle='global', in the same order on every rank
                self._record(plan, int(generation))
            arrays = self.batches.arrays()
        self._count_copies(e, self.batches.plan.samples_per_epoch, arrays)
        rows = np.zeros(0, self._index_dtype)  # chunked epochs, and slices of consecutive rows
        if plan is None:
            bounds = np.zeros(1, np.int64)
        else:
            bounds = split_bounds(plan.bounds, self.local_replicas)
            if plan.rows is not None:
                rows = _index_for_tf(plan.rows, self._index_dtype)
            elif not self._in_order:  # this epoch happens to be in order (a global shuffle's table): the graph gathers
                rows = _index_for_tf(np.arange(int(plan.bounds[-1]), dtype=self._index_dtype), self._index_dtype)
        data = [to_tensor(x) for x in [*arrays.x, *([] if arrays.y is None else [arrays.y])]]
        # the index and bounds: numpy, which TensorFlow copies into its own buffer
        return [*data, to_tensor(rows), bounds]

    def chunk_tensors(self, generation: Any, epoch: Any, chunk: Any) -> list[Any]:
        """Rows and per-replica bounds of chunk ``chunk`` of ``epoch``'s batches (run by ``tf.py_function``)."""
        first = int(chunk) * self._chunk_batches
        plan = self.batches.epoch_rows(int(epoch), first, min(first + self._chunk_batches, self.steps))
        with self._lock:
            self._record(plan, int(generation))
        assert plan.rows is not None  # chunked epochs are never consecutive rows
        return [to_tensor(_index_for_tf(plan.rows, self._index_dtype)), split_bounds(plan.bounds, self.local_replicas)]

    def _begin(self) -> list[np.int64]:
        """Which epoch a fresh iterator reads, and its generation (which keeps its group streams apart)."""
        with self._lock:
            self.generation += 1
            return [np.int64(self.start_epoch), np.int64(self.generation - 1)]

    def _finished(self, epoch: Any) -> np.int64:
        """An iterator produced the last batch of ``epoch``: the next pass reads the epoch after it."""
        with self._lock:
            self.start_epoch = max(self.start_epoch, int(epoch) + 1)
        return np.int64(0)

    def group_tensors(self, generation: Any, epoch: Any) -> list[Any]:
        """The next stacked group of ``epoch`` for iterator ``generation``: x, y and per-replica bounds."""
        key = (int(generation), int(epoch))
        with self._lock:
            stream = self._open.get(key)
            if stream is None:
                while len(self._open) >= MAX_OPEN_GROUP_STREAMS:  # iterators Keras dropped: stop their threads
                    self._open.pop(next(iter(self._open))).close()
                stream = self._open[key] = self.batches.stacked_groups(
                    key[1], group_bytes=self._group_bytes, align=TF_ALIGNMENT
                )
            group = next(stream)
            if group.numbers[-1] == self.steps - 1:
                self._open.pop(key).close()
            if self.served is not None:
                for k, number in enumerate(group.numbers):
                    padded = None if group.padded is None else group.padded[k]
                    ids = self.batches.global_ids(group.rows[k])
                    self.served.append(Served(key[0], key[1], number, ids, padded))
        sizes = [r.stop - r.start if isinstance(r, slice) else len(r) for r in group.rows]
        bounds = split_bounds(np.cumsum([0, *sizes], dtype=np.int64), self.local_replicas)
        data = [group.x] if group.y is None else [group.x, group.y]
        return [*(to_tensor(a) for a in data), bounds]

    def _record(self, plan: EpochRows, generation: int) -> None:
        if self.served is None:
            return
        for b in range(len(plan.bounds) - 1):
            lo, hi = int(plan.bounds[b]), int(plan.bounds[b + 1])
            rows = slice(lo, hi) if plan.rows is None else plan.rows[lo:hi]
            padded = None if plan.padded is None else plan.padded[lo:hi]
            padded = padded if padded is not None and padded.any() else None
            self.served.append(Served(generation, plan.epoch, plan.first + b, self.batches.global_ids(rows), padded))

    def _count_copies(self, epoch: int, samples: int, arrays: Any) -> None:
        """What the epoch's batches will copy inside TensorFlow, counted once per epoch."""
        x_row = sum(int(np.prod(a.shape[1:], dtype=np.int64)) * a.itemsize for a in arrays.x)
        y_row = 0 if arrays.y is None else int(np.prod(arrays.y.shape[1:], dtype=np.int64)) * arrays.y.itemsize
        w = self._window
        if w is not None:
            record_copy("window-gather", samples * (x_row * w.input_len + y_row * w.horizon), f"epoch {epoch}")
        elif not self._in_order:
            record_copy("gather", samples * (x_row + y_row), f"epoch {epoch}")
        elif self._stack_x:
            record_copy("stack", samples * x_row, f"epoch {epoch}: {self._num_x} columns per batch")

    # ------------------------------------------------------------------ per batch, in the graph
    def _element(self, i: Any, xs: list[Any], y: Any, rows: Any, bounds: Any) -> Any:
        import tensorflow as tf

        lo, hi = bounds[i], bounds[i + 1]
        w = self._window
        if w is not None:
            starts = tf.cast(rows[lo:hi], tf.int64)[:, None]

            def take_x(a: Any) -> Any:
                return tf.gather(a, starts + tf.range(w.input_len, dtype=tf.int64))

            def take_y(a: Any) -> Any:
                return tf.gather(a, starts + tf.range(w.target_start, w.target_start + w.horizon, dtype=tf.int64))

        elif self._in_order:

            def take_x(a: Any) -> Any:
                return a[lo:hi]

            take_y = take_x
        else:
            picked = rows[lo:hi]

            def take_x(a: Any) -> Any:
                return tf.gather(a, picked)

            take_y = take_x
        x = tf.stack([take_x(a) for a in xs], axis=-1) if self._stack_x else take_x(xs[0])
        spec = self.element_spec()
        if y is None:
            return tf.ensure_shape(x, spec.shape)
        return tf.ensure_shape(x, spec[0].shape), tf.ensure_shape(take_y(y), spec[1].shape)

    def dataset(self, prefetch: int = 2) -> Any:
        """The ``tf.data.Dataset`` of one epoch's per-replica elements per pass (its cardinality), from :attr:`start_epoch`."""
        import tensorflow as tf

        dtype = tf.as_dtype(self.batches.dtype)
        num_data = self._num_x + int(self._has_y)
        types = [dtype] * num_data + [tf.as_dtype(self._index_dtype), tf.int64]
        elements = self.steps * self.local_replicas

        def one_epoch(epoch: Any, generation: Any) -> Any:
            if self._grouped:
                groups = -(-self.steps // self._group_size)
                return tf.data.Dataset.range(groups).flat_map(lambda _: one_group(epoch, generation))
            out = tf.py_function(self.epoch_tensors, [epoch, generation], types)
            xs = list(out[: self._num_x])
            y = out[self._num_x] if self._has_y else None
            if self._chunked:
                chunks = -(-self.steps // self._chunk_batches)
                return tf.data.Dataset.range(chunks).flat_map(lambda c: one_chunk(epoch, generation, c, xs, y))
            rows, bounds = out[num_data], out[num_data + 1]
            return tf.data.Dataset.range(elements).map(lambda i: self._element(i, xs, y, rows, bounds))

        def one_chunk(epoch: Any, generation: Any, chunk: Any, xs: list[Any], y: Any) -> Any:
            rows, bounds = tf.py_function(
                self.chunk_tensors, [generation, epoch, chunk], [tf.as_dtype(self._index_dtype), tf.int64]
            )
            parts = tf.size(bounds, out_type=tf.int64) - 1
            return tf.data.Dataset.range(parts).map(lambda i: self._element(i, xs, y, rows, bounds))

        def one_group(epoch: Any, generation: Any) -> Any:  # its batches are slices of the group's tensors
            out = tf.py_function(self.group_tensors, [generation, epoch], [dtype] * (1 + int(self._has_y)) + [tf.int64])
            spec = self.element_spec()
            bounds = out[-1]

            def part(j: Any) -> Any:
                lo, hi = bounds[j], bounds[j + 1]
                if not self._has_y:
                    return tf.ensure_shape(out[0][lo:hi], spec.shape)
                return tf.ensure_shape(out[0][lo:hi], spec[0].shape), tf.ensure_shape(out[1][lo:hi], spec[1].shape)

            return tf.data.Dataset.range(tf.size(bounds, out_type=tf.int64) - 1).map(part)

        def end_of(epoch: Any) -> Any:  # no element: pulling past the epoch's last batch advances start_epoch
            def finish(_: Any) -> Any:
                done = tf.py_function(self._finished, [epoch], tf.int64)
                with tf.control_dependencies([done]):
                    empty = [
                        tf.zeros([0, *spec.shape[1:]], spec.dtype) for spec in tf.nest.flatten(self.element_spec())
                    ]
                return tf.nest.pack_sequence_as(self.element_spec(), empty)

            return tf.data.Dataset.range(1).map(finish).filter(lambda *_: False)

        def from_start(_: Any) -> Any:  # runs once per iterator: which epoch this pass reads
            start = tf.py_function(self._begin, [], [tf.int64, tf.int64])
            epoch, generation = tf.reshape(start[0], []), tf.reshape(start[1], [])
            return one_epoch(epoch, generation).concatenate(end_of(epoch))

        ds = tf.data.Dataset.from_tensors(np.int64(0)).flat_map(from_start)
        # Keras reads the number of steps from the cardinality: fit/evaluate/predict need no steps_per_epoch
        ds = ds.apply(tf.data.experimental.assert_cardinality(elements))
        options = tf.data.Options()
        # The table is already partitioned: sharding it again would drop (workers-1)/workers of every partition.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        ds = ds.with_options(options)
        return ds.prefetch(prefetch) if prefetch else ds


#: Bytes of features per group when the core stacks separate columns for TensorFlow (8 batches of 16
#: float32 features at batch 1024): one py_function call per group. Larger groups call Python less often but
#: hold more memory: tf.data keeps a few groups alive (at 10M rows: 4 MiB groups +104 MiB, 1 MiB +71, 512 KiB +61).
GROUP_BYTES = 512 * 1024
#: Rows of an epoch's index per ``tf.py_function`` call on the chunked path (256 KiB of int32 rows)
CHUNK_ROWS = 1 << 16
#: Group streams kept open per pipeline (one per live iterator and epoch; older ones are closed)
MAX_OPEN_GROUP_STREAMS = 4

#: elements tf.distribute's input iterator may buffer beyond the dataset's own prefetch (an upper bound)
DISTRIBUTED_PREFETCH = 2


def check_global_shuffle_prefetch(stream: EpochPipeline, prefetch: int) -> None:
    """Refuse a global shuffle whose epochs are so short that a prefetch reaches the next epoch at once.

    Keras builds the model from a first iterator that it drops after one element; if its
    prefetch already asks for epoch 1, that epoch's global shuffle (a collective) runs on
    a background thread beside the training iterator's epoch 0, in an order that can
    differ between ranks: the collectives would mismatch or hang.
    """
    elements = stream.steps * stream.local_replicas
    # + DISTRIBUTED_PREFETCH: tf.distribute's input iterator buffers elements of its own
    if stream.batches.shuffle == "global" and elements <= prefetch + DISTRIBUTED_PREFETCH:
        raise ValueError(
            f"make_dataset: shuffle='global' with {stream.steps} step(s) per epoch and prefetch={prefetch}: Keras's "
            "model-building pass would start the next epoch's global shuffle (a collective) out of step with the "
            f"other workers. Use more than {prefetch + DISTRIBUTED_PREFETCH} steps per epoch (a smaller "
            "global_batch_size) or shuffle=True"
        )


@dataclass
class DistributedData:
    """A distributed dataset for ``model.fit`` and the agreed step counts (identical on every worker)."""

    dataset: Any
    steps_per_epoch: int
    global_batch_size: int
    per_replica_batch_size: int
    num_workers: int
    train: EpochPipeline
    validation_data: Any = None
    validation_steps: int | None = None
    validation: EpochPipeline | None = field(default=None)
    #: what :func:`deeprc_tf.predict` needs to predict over this data (the columns are ``train.batches``'):
    #: the source table and the batch settings
    table: GlobalTable | None = None
    settings: BatchSettings | None = None

    @property
    def per_worker_batch_size(self) -> int:
        """Samples per batch on this worker: ``per_replica_batch_size`` times its local replicas."""
        return self.per_replica_batch_size * self.train.local_replicas

    @property
    def callback(self) -> Any:
        """A :class:`deeprc_tf.PlanEpoch` for this data: plan epoch = Keras epoch across ``fit`` calls."""
        from .callbacks import PlanEpoch

        return PlanEpoch([self.train])

    def fit_kwargs(self, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
        """``x``, ``steps_per_epoch``, ``shuffle=False`` (the plan shuffles), any validation arguments,
        and ``callbacks``: yours plus :attr:`callback`."""
        kw: dict[str, Any] = {
            "x": self.dataset,
            "steps_per_epoch": self.steps_per_epoch,
            "shuffle": False,
            "callbacks": [*callbacks, self.callback],
        }
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
    source: Source,
    features: str | Sequence[str],
    target: str | Sequence[str] | None,
    global_batch_size: int,
    *,
    strategy: Any = None,
    val: Source | None = None,
    prefetch: int = 2,
    record: bool = False,
    **options: Unpack[BatchOptions],
) -> DistributedData:
    """This rank's partition of ``source`` as a distributed dataset for ``model.fit`` (collective).

    ``source`` (and ``val``) is a GlobalTable, a path (Parquet, CSV or Arrow IPC; a file or
    a folder, each rank reading its share) or a function returning a GlobalTable — the
    sources deeprc-torch takes (:func:`deeprc_core.adapter.resolve_source`).

    The batch settings (``shuffle``, ``seed``, ``even``, ``window``, ``eval_window``,
    ``drop_last``, ``dropna_target``, ``dtype``, ``readonly``) are the core's
    :class:`~deeprc_core.batch_settings.BatchSettings`: the same keywords, types and checks
    as in deeprc-torch. ``global_batch_size`` is the
    batch of one step across all replicas; each replica gets
    ``global_batch_size / num_replicas_in_sync``. ``val`` is an optional validation
    table (same columns), read in order, in windows of ``eval_window`` (default: ``window``;
    e.g. stride 1 to score every window while training on every k-th). ``record=True``
    keeps the global ids of every training batch served (:attr:`DistributedData.served`),
    to check coverage.

    Returns :class:`DistributedData`; call ``model.fit(**data.fit_kwargs(), epochs=...)``
    or pass ``data.dataset`` with ``steps_per_epoch=data.steps_per_epoch``.
    """
    import tensorflow as tf

    settings = BatchSettings.from_options("make_dataset", options)
    strategy = tf.distribute.get_strategy() if strategy is None else strategy
    source = resolve_source(source, "make_dataset")
    val = None if val is None else resolve_source(val, "make_dataset val")
    workers, local_replicas = _workers_and_replicas(strategy)
    replicas = int(strategy.num_replicas_in_sync)
    if workers != source.world_size:
        wiring = detect_wiring()
        raise ValueError(
            f"make_dataset: the table is spread over {source.world_size} ranks but the strategy "
            f"({type(strategy).__name__}) has {workers} worker(s) (wiring: {wiring.world_size} ranks). Create the "
            "strategy with deeprc_tf.strategy() first and pass it: make_dataset(..., strategy=strategy)"
        )
    global_batch_size = positive_int(global_batch_size, "global_batch_size", "make_dataset")
    if global_batch_size < replicas or global_batch_size % replicas:
        raise ValueError(
            f"make_dataset: global_batch_size={global_batch_size} must be a positive multiple of the "
            f"{replicas} replicas in sync"
        )
    per_replica = global_batch_size // replicas
    train = EpochPipeline(
        TableBatches(
            source, features, target, per_replica * local_replicas, settings, align=TF_ALIGNMENT, what="make_dataset"
        ),
        local_replicas,
        record,
    )
    warn_plan(train.batches, "make_dataset")
    validation = None
    if val is not None:
        validation = EpochPipeline(
            TableBatches(
                val,
                features,
                target,
                per_replica * local_replicas,
                settings.for_eval(),
                align=TF_ALIGNMENT,
                what="make_dataset val",
            ),
            local_replicas,
        )

    if workers > 1:
        check_global_shuffle_prefetch(train, prefetch)
    distributed = workers > 1 or local_replicas > 1
    train_ds = _distribute(strategy, train, workers, prefetch) if distributed else train.dataset(prefetch)
    val_ds = None
    if validation is not None:
        val_ds = _distribute(strategy, validation, workers, prefetch) if distributed else validation.dataset(prefetch)
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
        table=source,
        settings=settings,
    )


def _distribute(strategy: Any, stream: EpochPipeline, workers: int, prefetch: int) -> Any:
    import tensorflow as tf

    rank = stream.batches.comm.rank

    def dataset_fn(ctx: tf.distribute.InputContext) -> Any:
        if ctx.num_input_pipelines != workers or ctx.input_pipeline_id != rank:
            raise ValueError(
                f"make_dataset: TensorFlow's input pipeline {ctx.input_pipeline_id} of {ctx.num_input_pipelines} "
                f"is not this rank ({rank} of {workers}); TF_CONFIG and the wiring disagree"
            )
        return stream.dataset(prefetch)

    return strategy.distribute_datasets_from_function(dataset_fn)
