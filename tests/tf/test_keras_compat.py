"""The keras-team/keras#20585 workaround: applied only to Keras code it knows, loudly refused otherwise.

That it makes ``model.fit`` train correctly on 2 workers is tested in test_multiworker.py.
"""

from __future__ import annotations

import pytest
from deeprc_tf.keras_compat import KerasPatchError, check_keras, patch_keras

from deeprc_tf import keras_compat

pytestmark = pytest.mark.tensorflow


def test_installed_keras_is_known() -> None:
    tf_trainer = check_keras()
    assert hasattr(tf_trainer, "reduce_per_replica")


def test_unknown_version_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    monkeypatch.setattr(keras, "__version__", "3.99.0")
    with pytest.raises(KerasPatchError, match="3.99.0 is installed"):
        check_keras()


def test_changed_code_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def reduce_per_replica(values: object, strategy: object, reduction: str) -> object:  # an "upstream fix"
        return values

    monkeypatch.setattr(tf_trainer, "reduce_per_replica", reduce_per_replica)
    with pytest.raises(KerasPatchError, match="changed"):
        check_keras()


def test_changed_loss_reduction_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src.backend.tensorflow import trainer as tf_trainer
    from keras.src.losses import loss as loss_module

    def reduce_values(values: object, sample_weight: object = None, reduction: str = "sum_over_batch_size") -> object:
        return values  # an "upstream rewrite"

    original = getattr(tf_trainer.reduce_per_replica, "_deeprc_original", tf_trainer.reduce_per_replica)
    monkeypatch.setattr(tf_trainer, "reduce_per_replica", original)  # as if not patched yet
    monkeypatch.setattr(loss_module, "reduce_values", reduce_values)
    with pytest.raises(KerasPatchError, match="reduce_values"):
        check_keras()


def test_scalar_loss_is_scaled_like_the_others() -> None:
    """With one replica the factor is 1: the patched reduction returns what Keras's own does."""
    import numpy as np
    from keras.src.losses import loss as loss_module

    patch_keras()
    assert loss_module.reduce_values._deeprc_original
    for values in (np.float32(3.0), np.arange(4, dtype=np.float32)):
        got = loss_module.reduce_values(values)
        want = loss_module.reduce_values._deeprc_original(values)
        assert float(got) == float(want)


def test_switch_off_and_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src.backend.tensorflow import trainer as tf_trainer

    monkeypatch.setenv(keras_compat.PATCH_ENV, "0")
    assert patch_keras() is False
    monkeypatch.delenv(keras_compat.PATCH_ENV)
    original = tf_trainer.reduce_per_replica
    monkeypatch.setattr(tf_trainer, "reduce_per_replica", original)  # restored after the test
    monkeypatch.setattr(
        tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build", tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    )
    from keras.src.losses import loss as loss_module

    monkeypatch.setattr(loss_module, "reduce_values", loss_module.reduce_values)
    assert patch_keras() is True
    patched = tf_trainer.reduce_per_replica
    assert patched._deeprc_patched
    assert patch_keras() is True and tf_trainer.reduce_per_replica is patched  # once only


def test_single_worker_reduction_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    monkeypatch.setattr(tf_trainer, "reduce_per_replica", tf_trainer.reduce_per_replica)
    monkeypatch.setattr(
        tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build", tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    )
    patch_keras()
    value = tf.constant(2.0)
    assert float(tf_trainer.reduce_per_replica(value, tf.distribute.get_strategy(), "auto")) == 2.0
