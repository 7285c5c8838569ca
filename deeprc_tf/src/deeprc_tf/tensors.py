"""numpy views -> ``tf.Tensor`` without copies, and never a misaligned buffer.

TensorFlow aborts the whole process (``Check failed: IsAligned()``, not an exception)
when an op touches a tensor whose buffer does not start on a 64-byte boundary, and
``tf.experimental.dlpack.from_dlpack`` accepts any address. So :func:`to_tensor` is
the only door into TensorFlow here, and it opens DLPack only for views proven
aligned and C-contiguous; everything else goes through the core's aligned copy (one
copy, counted by :func:`deeprc_core.copy_stats`).

``tf.experimental.dlpack.from_dlpack`` takes only legacy (unversioned) ``dltensor``
capsules; ``ndarray.__dlpack__()`` without ``max_version`` gives one. numpy refuses to
export a read-only array that way (memory-mapped Arrow files, sliding windows), so the
core's read-only policy (:func:`deeprc_core.readonly.to_dlpack_safe`, ``consumer_writes=False``)
gives an alias of the same memory instead: TensorFlow tensors are immutable and never
write through it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from deeprc_core.readonly import to_dlpack_safe
from deeprc_core.views import TF_ALIGNMENT

from deeprc_core import aligned_copy, is_aligned

#: numpy dtypes TensorFlow's DLPack import understands.
DLPACK_DTYPES = frozenset(
    np.dtype(t)
    for t in (
        np.float16,
        np.float32,
        np.float64,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.bool_,
        np.complex64,
        np.complex128,
    )
)


def dlpack_ready(view: np.ndarray, alignment: int = TF_ALIGNMENT) -> bool:
    """True when ``view`` may enter TensorFlow through DLPack as it is (no copy)."""
    return bool(
        isinstance(view, np.ndarray)
        and view.dtype in DLPACK_DTYPES
        and view.flags.c_contiguous
        and view.size > 0
        and is_aligned(view, alignment)
    )


def tf_ready(view: Any, alignment: int = TF_ALIGNMENT) -> np.ndarray:
    """``view`` itself when it is DLPack-ready, else its aligned, C-contiguous copy (counted)."""
    arr = np.asarray(view)
    if arr.dtype not in DLPACK_DTYPES:
        raise TypeError(f"dtype {arr.dtype} cannot become a TensorFlow tensor; cast it to a numeric dtype first")
    if arr.size == 0 or dlpack_ready(arr, alignment):
        return arr
    return aligned_copy(arr, alignment, "tf-batch")


def to_tensor(view: Any, alignment: int = TF_ALIGNMENT) -> Any:
    """A ``tf.Tensor`` over ``view``'s memory (DLPack), or over one aligned copy of it.

    Never hands TensorFlow a buffer that is not ``alignment``-byte aligned. Empty
    arrays become ordinary (allocated) tensors.
    """
    import tensorflow as tf

    arr = tf_ready(view, alignment)
    if arr.size == 0:
        return tf.zeros(arr.shape, dtype=arr.dtype)
    arr = to_dlpack_safe(arr, "share", consumer_writes=False)  # the core's read-only policy: TF never writes
    # The last line of defence: the alignment TF needs, proven on the exact array exported.
    if not dlpack_ready(arr, alignment):  # pragma: no cover - tf_ready guarantees it
        raise AssertionError("deeprc_tf: refusing to export a misaligned buffer to TensorFlow")
    return tf.experimental.dlpack.from_dlpack(arr.__dlpack__())
