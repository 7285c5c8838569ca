"""Batch plans: which local samples each rank reads, in which order, in how many batches.

DDP and MultiWorkerMirroredStrategy hang or silently train wrong when ranks run
different numbers of steps. A :class:`BatchPlan` is agreed once (one allgather of the
per-rank sample counts) so every rank runs exactly :attr:`BatchPlan.num_batches`
batches in every epoch. Policies for uneven partitions (``even=``):

``"auto"`` (default)
    ``"drop"`` when it would skip at most one sample per rank (partitions that are already
    even: nothing moves), else ``"rebalance"`` (e.g. the parts of an ordered split, which
    sit on a few ranks). Decided by :class:`~deeprc_core.TableBatches` from the agreed
    counts, so every rank takes the same branch.
``"drop"``
    The common number of batches is the smallest any rank can fill:
    ``min_r ceil(n_r / B)`` (``floor`` with ``drop_last``). A rank uses at most
    ``num_batches * B`` samples; only the samples beyond that are skipped in an epoch
    (with shuffling, different ones each epoch). When every rank needs the same number
    of batches (e.g. 5807/5807/5806 rows, B=64) nothing is dropped; last batches may
    differ in size across ranks.
``"pad"``
    ``max_r ceil(n_r / B)`` batches; ranks that run short repeat their own samples
    from the start of their (shuffled) order, like torch's DistributedSampler.
    Repeated samples are marked in :attr:`Batch.padded`.
``"rebalance"``
    Handled before planning by :meth:`GlobalTable.rebalance` (rows move, in global order,
    so counts differ by at most one; with a window, so that the *window starts* differ by
    at most one: :func:`deeprc_core.windows.window_bounds`); then ``"drop"`` applies and
    skips at most one sample per rank per epoch, and usually none.

Shuffling (``shuffle=``): ``"local"`` permutes each rank's own samples with a
permutation keyed by ``(seed, epoch, rank)`` — computed batch by batch
(:class:`~deeprc_core.permutation.Permutation`: no per-sample memory), no communication,
no table copy. ``"global"`` (a permutation of the
whole global table, rows exchanged) is done on the table by
:meth:`GlobalTable.global_shuffle`; the plan then runs unshuffled over its result.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from .comm.base import Communicator
from .errors import DeepRCError
from .permutation import Permutation

if TYPE_CHECKING:
    from .windows import Window

EvenPolicy = Literal["auto", "drop", "pad", "rebalance"]
ShuffleMode = Literal["none", "local", "global"]

EVEN_POLICIES = ("auto", "drop", "pad", "rebalance")
SHUFFLE_MODES = ("none", "local", "global")


def _checked_int(value: object, name: str, what: str, minimum: int, kind: str) -> int:
    where = f"{what}: " if what else ""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}{name} must be a {kind} integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{where}{name} must be a {kind} integer, got {value}")
    return int(value)


def positive_int(value: object, name: str, what: str = "") -> int:
    """``value`` as an int >= 1; a string, float, bool or None is an error naming ``name`` (never coerced)."""
    return _checked_int(value, name, what, 1, "positive")


def epoch_number(epoch: object, what: str = "") -> int:
    """``epoch`` as an int >= 0; anything else is an error naming the epoch."""
    return _checked_int(epoch, "epoch", what, 0, "non-negative")


def check_shuffle_with_window(shuffle: str, window: Window | None, what: str) -> None:
    """Refuse ``shuffle='global'`` with a window (windows need each rank's rows in time order)."""
    if shuffle == "global" and window is not None:
        raise ValueError(
            f"{what}: shuffle='global' cannot be combined with window= (windows need the time order); "
            "use shuffle=True (local), which permutes each rank's windows"
        )


def normalize_shuffle(shuffle: bool | str) -> ShuffleMode:
    """``True`` -> ``"local"``, ``False`` -> ``"none"``; validate strings."""
    if shuffle is True:
        return "local"
    if shuffle is False or shuffle is None:
        return "none"
    if shuffle not in SHUFFLE_MODES:
        raise ValueError(f"shuffle={shuffle!r}: use True/False or one of {SHUFFLE_MODES}")
    return shuffle  # type: ignore[return-value]


@dataclass(frozen=True)
class PlannedBatch:
    """One batch of the plan: which local samples, and which of them are padding."""

    #: index of the batch within the epoch
    number: int
    #: local sample indices: a ``slice`` (contiguous, zero-copy) or an int64 array
    samples: slice | np.ndarray
    #: boolean mask of repeated (padding) samples, or None when there are none
    padded: np.ndarray | None = None


class BatchPlan:
    """An agreed plan of ``num_batches`` batches per epoch on every rank (collective to build)."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        comm: Communicator,
        *,
        even: EvenPolicy = "drop",
        shuffle: bool | str = False,
        seed: int = 0,
        drop_last: bool = False,
        what: str = "batch plan",
    ) -> None:
        batch_size = positive_int(batch_size, "batch_size", what)
        if even not in EVEN_POLICIES:
            raise ValueError(f"even={even!r}: choose one of {EVEN_POLICIES}")
        self.shuffle = normalize_shuffle(shuffle)
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.even = even
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.rank = comm.rank
        self.counts: tuple[int, ...] = tuple(int(c) for c in comm.allgather(self.num_samples))
        total = sum(self.counts)
        if total == 0:
            raise DeepRCError(f"{what}: the global table has no samples on any of the {comm.size} rank(s)")
        per_rank = [(c // self.batch_size) if self.drop_last else math.ceil(c / self.batch_size) for c in self.counts]
        if even == "pad":
            empty = [r for r, c in enumerate(self.counts) if c == 0]
            if empty:
                raise DeepRCError(
                    f"{what}: rank(s) {empty} have no samples, so even='pad' has nothing to repeat; "
                    "use even='rebalance' to move rows onto them"
                )
            self.num_batches = max(per_rank)
        else:
            self.num_batches = min(per_rank)
        if self.num_batches == 0:
            short = [r for r, n in enumerate(per_rank) if n == 0]
            raise DeepRCError(
                f"{what}: rank(s) {short} have fewer samples ({[self.counts[r] for r in short]}) than one batch "
                f"({self.batch_size}{' with drop_last' if self.drop_last else ''}), so no rank could run a batch. "
                "Use even='rebalance' (moves rows so every rank has its share), even='pad', or a smaller batch_size"
            )
        if even == "pad":  # every rank fills as many samples as the largest one
            self.samples_per_epoch = self.num_batches * self.batch_size if self.drop_last else max(self.counts)
        else:
            self.samples_per_epoch = min(self.num_batches * self.batch_size, self.num_samples)

    def __len__(self) -> int:
        return self.num_batches

    @property
    def dropped_per_epoch(self) -> int:
        """Local samples skipped every epoch by the ``drop`` policy."""
        return max(self.num_samples - self.samples_per_epoch, 0)

    @property
    def dropped_total(self) -> int:
        """Samples the ``drop`` policy skips every epoch on all ranks together (the same on every rank)."""
        if self.even == "pad":
            return 0
        return sum(max(c - self.num_batches * self.batch_size, 0) for c in self.counts)

    @property
    def padded_per_epoch(self) -> int:
        """Local samples repeated every epoch by the ``pad`` policy."""
        return max(self.samples_per_epoch - self.num_samples, 0)

    def permutation(self, epoch: int) -> Permutation | None:
        """The local sample order of ``epoch`` as a computed permutation (None means 0..n-1 in order)."""
        epoch = epoch_number(epoch)
        if self.shuffle != "local":
            return None
        return Permutation(self.num_samples, [self.seed, epoch, self.rank])

    def batch_range(self, first: int = 0, last: int | None = None) -> tuple[int, int]:
        """``first, last`` checked as a batch range within ``0 .. num_batches`` (``last`` None: to the end)."""
        last = self.num_batches if last is None else last
        if not 0 <= first <= last <= self.num_batches:
            raise ValueError(f"batches {first}..{last} are outside this epoch's 0..{self.num_batches}")
        return int(first), int(last)

    def bounds(self) -> np.ndarray:
        """Batch ``b`` of every epoch is positions ``bounds[b]:bounds[b+1]`` of the epoch's samples (int64)."""
        return np.minimum(np.arange(self.num_batches + 1, dtype=np.int64) * self.batch_size, self.samples_per_epoch)

    def epoch_samples(
        self, epoch: int, first: int = 0, last: int | None = None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The samples of batches ``first .. last - 1`` of ``epoch`` (default: all), in batch order, at once.

        What :meth:`batches` yields for them, concatenated. Returns ``(samples, padded)``:
        ``samples`` is None when the whole epoch is the samples ``0 .. samples_per_epoch - 1``
        in order (no shuffle, no padding); ``padded`` marks repeated samples, or is None.
        Cut batches with :meth:`bounds` (less ``bounds()[first]`` for a range). A whole
        shuffled epoch is its aligned order (4 bytes a sample); a range holds only its own part.
        """
        perm = self.permutation(epoch)
        n, bs, total = self.num_samples, self.batch_size, self.samples_per_epoch
        first, last = self.batch_range(first, last)
        lo, hi = min(first * bs, total), min(last * bs, total)
        whole = lo == 0 and hi == total
        if perm is None and total <= n and whole:
            return None, None
        dtype = np.int32 if total < 2**31 else np.int64
        if hi <= n:  # no padding: consecutive samples, or this stretch of the epoch's order
            if perm is None:
                return np.arange(lo, hi, dtype=dtype), None
            return (perm.array()[:hi] if whole else perm.values(lo, hi)), None
        # even='pad': positions past the rank's samples wrap around to its first ones
        pos: np.ndarray = np.arange(lo, hi, dtype=dtype)
        padded = pos >= n
        samples = pos % n
        return (samples if perm is None else perm.take(samples)), padded

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[PlannedBatch]:
        """The batches of ``epoch`` from batch number ``start`` on (to resume mid-epoch).

        A shuffled epoch's order is computed batch by batch (:class:`Permutation`), never held whole.
        """
        perm = self.permutation(epoch)
        n, bs, total = self.num_samples, self.batch_size, self.samples_per_epoch
        for b in range(max(start, 0), self.num_batches):
            lo = b * bs
            hi = min(lo + bs, total)
            if hi <= n:  # no padding: consecutive rows, or this stretch of the epoch's order
                yield PlannedBatch(b, slice(lo, hi) if perm is None else perm.values(lo, hi))
                continue
            pos = np.arange(lo, hi, dtype=np.int64)
            padded = pos >= n
            idx = pos % n
            if perm is not None:
                idx = perm.take(idx)
            yield PlannedBatch(b, idx, padded if padded.any() else None)
