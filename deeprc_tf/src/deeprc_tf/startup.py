"""Has TensorFlow already run ops in this process?

Collective ops (MultiWorkerMirroredStrategy) can only be configured before the eager
context is initialised — the first tensor, op or device query that touches the
runtime initialises it, and after that TensorFlow fails with "Collective ops must be
configured at program startup". We check first and raise a message that says what to do.
"""

from __future__ import annotations

from deeprc_core import DeepRCError


class TFAlreadyStartedError(DeepRCError, RuntimeError):
    """TensorFlow ran ops before :func:`deeprc_tf.strategy` was called."""


def tf_has_started() -> bool:
    """True when TensorFlow's eager context is already initialised in this process."""
    from tensorflow.python.eager import context  # noqa: PLC0415  (private, but the only reliable signal)

    ctx = context.context()
    if not hasattr(ctx, "_context_handle"):  # an unknown TF layout: the strategy will tell
        return False
    return ctx._context_handle is not None


def require_fresh_tf(what: str = "deeprc_tf.strategy()") -> None:
    """Raise TFAlreadyStartedError when TF has run ops already."""
    if tf_has_started():
        raise TFAlreadyStartedError(
            f"{what} must be called before TensorFlow runs any op (creating a tensor, a model, a dataset, "
            "or listing logical devices all start TensorFlow). Multi-worker collectives can only be configured "
            "at program startup: call deeprc_tf.strategy() first thing in your script, right after the imports"
        )
