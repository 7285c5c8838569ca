"""Make Keras 3 ``model.fit`` work under MultiWorkerMirroredStrategy (keras-team/keras#20585).

Keras 3's TensorFlow trainer has two bugs that only show with several workers:

1. ``TensorFlowTrainer._maybe_symbolic_build`` builds the model from the first
   batch by calling ``strategy.reduce("MEAN", batch, axis=None)`` on the whole
   ``(x, y)`` structure. MultiWorkerMirroredStrategy's reduce takes one value, not a
   structure, so ``fit`` fails with ``Attempt to convert a value (PerReplica:{...})``.
   It also makes an all-reduce of the data for a step that only needs shapes.
   Fix: build from this worker's first replica's batch (no collective).
2. ``reduce_per_replica`` reduces the step's metric results in multi-worker mode
   with ``strategy.reduce("MEAN", v, axis=0)``. The other branch means *axis 0 of
   the stacked replicas* (``tf.reduce_mean(local_results, axis=0)``), but for a
   collective ``axis=0`` means the value's own first dimension, and metric results
   are scalars: ``Invalid reduction dimension 0 for input with 0 dimensions``.
   Fix: ``axis=None`` — the element-wise mean over all replicas, which is what
   MirroredStrategy computes on one host.
3. ``keras.src.losses.loss.reduce_values`` returns a loss that is already a scalar
   without ``scale_loss_for_distribution`` (the 1/replicas factor that turns the
   gradients' all-reduce SUM into a mean), but the loss tracker still un-scales it
   (x replicas). A scalar per-replica loss is common: a model with output ``(B,)``
   and targets ``(B,)`` (one target column) under ``"mse"`` averages over the last
   axis, which is the batch. Measured with 2 workers: gradients and the reported loss
   are exactly 2x the single-process ones — training silently runs at replicas x the
   learning rate. Fix: scale the scalar as Keras scales every other reduced loss
   (tf_keras did; one process is unaffected, the factor is 1).

:func:`patch_keras` applies all three, only on Keras versions and code it knows: it
checks the version range and that the functions still contain the code it
replaces. Anything else raises :class:`KerasPatchError` instead of training with a
Keras that might silently mis-train.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from deeprc_core import DeepRCError, env_vars

#: Keras versions whose TensorFlow trainer was checked against this patch (inclusive lower, exclusive upper).
KNOWN_KERAS = ((3, 0), (3, 16))
#: Code that must be present in the functions patched; gone means Keras changed them.
_SYMBOLIC_BUILD_BUG = 'self.distribute_strategy.reduce(\n                        "MEAN",'
_REDUCE_BUG = 'strategy.reduce("MEAN", v, axis=0)'
_SCALAR_LOSS_BUG = ("or tuple(values.shape) == ()", "loss = scale_loss_for_distribution(loss)")
#: reductions whose result Keras scales for distribution (what the scalar case must match)
_SCALED_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")
#: Set to 0 to skip the patch (at your own risk, e.g. once Keras has fixed #20585).
PATCH_ENV = env_vars.TF_PATCH_KERAS


class KerasPatchError(DeepRCError, RuntimeError):
    """This Keras is one the #20585 workaround does not know; training could be wrong."""


def _version(raw: str) -> tuple[int, ...]:
    parts = []
    for p in raw.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def keras_needs_patch() -> bool:
    """True when Keras 3 on the TensorFlow backend is in use (tf_keras and other backends need nothing)."""
    if os.environ.get("TF_USE_LEGACY_KERAS", "") in ("1", "true", "True"):
        return False
    try:
        import keras
    except ImportError:
        return False
    return _version(keras.__version__) >= (3,) and keras.backend.backend() == "tensorflow"


def check_keras() -> Any:
    """The Keras TF trainer module, after checking that the patch fits it (else KerasPatchError)."""
    import keras
    from keras.src.backend.tensorflow import trainer as tf_trainer

    version = _version(keras.__version__)
    lo, hi = KNOWN_KERAS
    how = (
        f"Set {PATCH_ENV}=0 to run without the workaround only after checking that this Keras trains correctly "
        "with MultiWorkerMirroredStrategy, or install a Keras in the known range, or use tf_keras "
        "(TF_USE_LEGACY_KERAS=1)."
    )
    if not lo <= version[:2] < hi:
        raise KerasPatchError(
            f"deeprc_tf knows the keras-team/keras#20585 workaround for Keras {'.'.join(map(str, lo))} up to "
            f"(excluding) {'.'.join(map(str, hi))}, but Keras {keras.__version__} is installed. {how}"
        )
    from keras.src.losses import loss as loss_module

    try:
        build_src = inspect.getsource(tf_trainer.TensorFlowTrainer._maybe_symbolic_build)
        reduce_src = inspect.getsource(tf_trainer.reduce_per_replica)
        values_src = inspect.getsource(
            getattr(loss_module.reduce_values, "_deeprc_original", loss_module.reduce_values)
        )
        tf_trainer._collective_all_reduce_multi_worker  # noqa: B018  (must exist)
        loss_module.scale_loss_for_distribution  # noqa: B018
    except (AttributeError, OSError, TypeError) as exc:
        raise KerasPatchError(
            f"Keras {keras.__version__}: the code the workaround replaces is not there ({exc}). {how}"
        ) from exc
    if getattr(tf_trainer.reduce_per_replica, "_deeprc_patched", False):
        return tf_trainer
    if _SYMBOLIC_BUILD_BUG not in build_src or _REDUCE_BUG not in reduce_src:
        raise KerasPatchError(
            f"Keras {keras.__version__} changed TensorFlowTrainer._maybe_symbolic_build or reduce_per_replica, "
            f"which the keras-team/keras#20585 workaround replaces. {how}"
        )
    if not all(code in values_src for code in _SCALAR_LOSS_BUG):
        raise KerasPatchError(
            f"Keras {keras.__version__} changed keras.src.losses.loss.reduce_values, whose scalar-loss scaling "
            f"under tf.distribute the workaround fixes. {how}"
        )
    return tf_trainer


def patch_keras() -> bool:
    """Apply the #20585 workaround once (idempotent); False when not needed or switched off."""
    if os.environ.get(PATCH_ENV, "1").strip() in ("0", "false", "False", "off"):
        return False
    if not keras_needs_patch():
        return False
    tf_trainer = check_keras()
    if getattr(tf_trainer.reduce_per_replica, "_deeprc_patched", False):
        return True
    import tensorflow as tf
    from keras.src import tree

    multi_worker = tf_trainer._collective_all_reduce_multi_worker
    original_reduce = tf_trainer.reduce_per_replica
    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def _mean(v: Any, strategy: Any) -> Any:
        if not isinstance(v, tf.distribute.DistributedValues):
            # One replica per worker: `run` returned a plain tensor, and a collective needs its device.
            with tf.device(strategy.extended.worker_devices[0]):
                v = tf.identity(v)
        return strategy.reduce("MEAN", v, axis=None)

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if (
            reduction in ("auto", "mean")
            and multi_worker(strategy)
            and not isinstance(strategy, tf.distribute.TPUStrategy)
        ):
            return tree.map_structure(lambda v: _mean(v, strategy), values)
        return original_reduce(values, strategy, reduction)

    def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> Any:
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None and multi_worker(strategy):
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda x: (
                        strategy.experimental_local_results(x)[0]
                        if isinstance(x, tf.distribute.DistributedValues)
                        else x
                    ),
                    batch,
                )
                break
            iterator = None
        return original_build(self, iterator=iterator, data_batch=data_batch)

    from keras.src.losses import loss as loss_module

    original_values = loss_module.reduce_values

    def reduce_values(values: Any, sample_weight: Any = None, reduction: str = "sum_over_batch_size") -> Any:
        loss = original_values(values, sample_weight, reduction)
        if reduction in _SCALED_REDUCTIONS and tuple(values.shape) == ():
            loss = loss_module.scale_loss_for_distribution(loss)  # x 1/replicas, like every other reduced loss
        return loss

    reduce_values._deeprc_original = original_values  # type: ignore[attr-defined]
    loss_module.reduce_values = reduce_values
    reduce_per_replica.__doc__ = original_reduce.__doc__
    reduce_per_replica._deeprc_patched = True  # type: ignore[attr-defined]
    reduce_per_replica._deeprc_original = original_reduce  # type: ignore[attr-defined]
    _maybe_symbolic_build._deeprc_original = original_build  # type: ignore[attr-defined]
    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    return True
