"""Read-only memory, and the one policy for handing views to DLPack / ``from_numpy`` consumers.

Read-only memory (memory-mapped files) yields read-only views (``view.flags.writeable``
is False). DLPack consumers do not all honour that flag: ``torch.from_dlpack`` of a
read-only numpy array returns a *writable* tensor over the same memory (numpy >= 2 /
torch >= 2.4 exchange DLPack 1.0, whose read-only bit torch ignores), and a write there
segfaults. Adapters must therefore pass views through :func:`to_dlpack_safe`, which
returns the view itself when its memory is writable and otherwise applies the one
read-only policy (``ReadOnlyPolicy``: a counted copy, an alias, or an error).
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import pyarrow as pa

from .errors import ZeroCopyError
from .views import TF_ALIGNMENT, aligned_copy


def is_writable(view: np.ndarray) -> bool:
    """False for read-only views (memory-mapped files, sliding windows): do not write through them."""
    return bool(view.flags.writeable)


def memory_is_readonly(view: np.ndarray) -> bool:
    """True when the memory under ``view`` may not be written at all (e.g. a memory-mapped file).

    Unlike :func:`is_writable` this looks past read-only *views* of writable memory
    (sliding windows are flagged read-only on purpose) to the buffer that owns the bytes.
    """
    owner = _owner(view)
    if isinstance(owner, pa.Buffer):
        return not owner.is_mutable
    if isinstance(owner, np.ndarray):
        return not owner.flags.writeable
    try:
        return bool(memoryview(owner).readonly)  # type: ignore[arg-type]
    except TypeError:
        return not view.flags.writeable


def _owner(view: np.ndarray) -> object:
    """The object at the end of the ``.base`` chain: an Arrow buffer, an owning array, an mmap..."""
    obj: object = view
    while True:
        nxt = getattr(obj, "base", None)  # numpy's DummyArray (as_strided) also keeps its array in .base
        if nxt is None or nxt is obj:
            return obj
        obj = nxt


#: What an adapter does with a batch view flagged read-only (:func:`to_dlpack_safe`); one policy for every adapter.
ReadOnlyPolicy = Literal["auto", "share", "copy", "error"]
READONLY_POLICIES: tuple[str, ...] = ("auto", "share", "copy", "error")
#: The one copy label of a read-only view copied for a consumer (``copy_stats()``), whatever the reason.
READONLY_COPY = "readonly"


class ReadOnlyBatchWarning(UserWarning):
    """Batches share read-only memory with the table: reading is fine, in-place writes reach the table."""


_warned_shared = False


class _WritableAlias:
    """Presents a view's memory as writable so numpy exports a legacy DLPack capsule / torch accepts it.

    Holds the original view, so the Arrow buffer lives as long as the consumer's tensor does.
    """

    def __init__(self, view: np.ndarray) -> None:
        self.view = view
        iface = dict(view.__array_interface__)
        iface["data"] = (iface["data"][0], False)
        self.__array_interface__ = iface


def to_dlpack_safe(
    view: np.ndarray,
    readonly: ReadOnlyPolicy | str = "auto",
    alignment: int | None = None,
    *,
    consumer_writes: bool = True,
) -> np.ndarray:
    """``view`` in a form a DLPack / ``from_numpy`` consumer may alias safely; the one read-only policy.

    A writable view comes back as it is (zero-copy). A view flagged read-only is either
    *read-only memory* (a memory-mapped file: a write there segfaults, and torch ignores
    DLPack's read-only bit) or a read-only *flag* over writable memory (the strided windows
    of ``window=``, where a write would reach the table and the overlapping windows):

    * ``consumer_writes=False`` (TensorFlow: its tensors are immutable): an alias, never a copy;
    * ``"auto"``: read-only memory is copied (counted as ``readonly``); a flagged view of
      writable memory is aliased and :class:`ReadOnlyBatchWarning` says so once;
    * ``"share"``: always alias (the caller promises never to write);
    * ``"copy"``: always copy (counted as ``readonly``);
    * ``"error"``: read-only memory raises :class:`ZeroCopyError`; flagged views are aliased.

    With ``alignment`` a copy, if one is made, lies on that byte boundary.
    """
    global _warned_shared
    if readonly not in READONLY_POLICIES:
        raise ValueError(f"readonly={readonly!r}: choose one of {READONLY_POLICIES}")
    if view.flags.writeable:
        return view
    if consumer_writes and readonly != "share":
        unwritable = memory_is_readonly(view)
        if readonly == "copy" or (readonly == "auto" and unwritable):
            return aligned_copy(view, alignment or TF_ALIGNMENT, reason=READONLY_COPY)
        if unwritable:  # readonly == "error"
            raise ZeroCopyError(
                "this view is over read-only memory (e.g. a memory-mapped Arrow IPC file); a framework tensor "
                "over it would be writable and a write would crash the process. Pass readonly='copy', read "
                "the file with memory_map=False, or copy the columns once with deeprc_core.ensure_aligned"
            )
        if readonly == "auto" and not _warned_shared:
            _warned_shared = True
            warnings.warn(
                "Deep RC batches are read-only views of the table's memory (e.g. overlapping windows); "
                "do not modify batch tensors in place (readonly='copy' copies them, counted).",
                ReadOnlyBatchWarning,
                stacklevel=4,
            )
    return np.asarray(_WritableAlias(view))
