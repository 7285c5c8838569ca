"""Shuffled epoch orders that are computed, not held: a keyed pseudo-random permutation.

A shuffled epoch needs position ``p -> sample`` for every position. Drawing the whole
permutation (``rng.shuffle``) holds 4 bytes per local sample for the whole epoch: at 10M
rows 38 MiB, the largest piece of a shuffled loader's memory. :class:`Permutation`
computes ``order[p]`` for any positions on demand instead, so a loader holds only the
positions of the batches it is stacking.

It is a Feistel network on ``k = bit_length(n - 1)`` bits (halves of ``ceil(k/2)`` and
``floor(k/2)`` bits, :data:`ROUNDS` rounds, each round's function the SplitMix64 mixer
keyed by a 64-bit key) restricted to ``range(n)`` by cycle walking: a value ``>= n`` is
encrypted again until it falls inside. A Feistel network is a bijection whatever its
round functions, so the result is always an exact permutation; with independent keyed
rounds it is statistically indistinguishable from a uniform one for training purposes
(Luby–Rackoff: four rounds give a strong pseudo-random permutation). Since ``2**k < 2n``,
a position takes fewer than two encryptions on average.

Below :data:`HELD_BELOW` samples (where the order costs at most 256 KiB) the permutation
is an exact Fisher–Yates shuffle from the same key, held: Feistel networks on a few bits
reach only a biased subset of the permutations.

The compiled kernel (``deeprc_core._stack.permute``, where built) and numpy give the same
values; ``DEEPRC_STACK_KERNEL`` picks between them as it does for stacking.
"""

from __future__ import annotations

import numpy as np

from .stacking import NATIVE
from .views import aligned_empty

#: Feistel rounds (even, so the halves end where they started)
ROUNDS = 6
#: orders of fewer samples are drawn exactly and held (256 KiB at most)
HELD_BELOW = 1 << 16
#: positions evaluated per piece when a whole order is materialized (bounds the temporaries)
PIECE = 1 << 16

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix(r: np.ndarray, key: np.uint64) -> np.ndarray:
    """SplitMix64's finalizer of ``r + key`` (uint64, wrapping)."""
    z = r + key + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


class Permutation:
    """A pseudo-random permutation of ``range(n)`` keyed by ``key``, evaluated at any positions (O(1) memory)."""

    def __init__(self, n: int, key: object) -> None:
        """``key`` seeds numpy's generator (an int or a sequence of ints, e.g. ``(seed, epoch, rank)``)."""
        if n < 0:
            raise ValueError(f"Permutation: n must be >= 0, got {n}")
        self.n = int(n)
        rng = np.random.default_rng(key)  # type: ignore[arg-type]
        #: the round keys
        self.keys = rng.integers(0, 2**64, size=ROUNDS, dtype=np.uint64)
        self._key_bytes = self.keys.tobytes()
        bits = max(self.n - 1, 0).bit_length()
        self._right = bits // 2
        self._left = bits - self._right
        #: the index dtype of the values: int32 where they fit
        self.dtype = np.dtype(np.int32 if self.n < 2**31 else np.int64)
        self._held = rng.permutation(self.n).astype(self.dtype) if self.n < HELD_BELOW else None

    def __len__(self) -> int:
        return self.n

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        """One pass of the Feistel network over ``2**k`` values (uint64 in, uint64 out)."""
        wl, wr = self._left, self._right
        left, right = x >> np.uint64(wr), x & np.uint64((1 << wr) - 1)
        for key in self.keys:
            f = _mix(right, key) & np.uint64((1 << wl) - 1)
            left, right = right, left ^ f
            wl, wr = wr, wl
        return (left << np.uint64(wr)) | right

    def take(self, positions: np.ndarray) -> np.ndarray:
        """``order[positions]``: the sample at each position (positions in ``range(n)``)."""
        pos = np.asarray(positions)
        if pos.size and (pos.min() < 0 or pos.max() >= self.n):
            raise IndexError(f"Permutation: positions must lie in range({self.n})")
        if self._held is not None:
            return self._held[pos]
        if NATIVE is not None:
            out = np.empty(pos.shape, self.dtype)
            NATIVE.permute(out, np.ascontiguousarray(pos, np.int64), self.n, self._left, self._right, self._key_bytes)
            return out
        return self._numpy(pos)

    def _numpy(self, pos: np.ndarray) -> np.ndarray:
        """The network's values in numpy (the kernel's fallback, and its reference)."""
        out = np.empty(pos.shape, self.dtype)
        y = self._encrypt(pos.astype(np.uint64))
        walking = np.flatnonzero(y >= self.n)  # cycle walking: encrypt again until inside range(n)
        while walking.size:
            y[walking] = self._encrypt(y[walking])
            walking = walking[y[walking] >= self.n]
        out[...] = y
        return out

    def values(self, lo: int, hi: int) -> np.ndarray:
        """``order[lo:hi]``."""
        if not 0 <= lo <= hi <= self.n:
            raise IndexError(f"Permutation: positions {lo}..{hi} are outside range({self.n})")
        if self._held is not None:
            return self._held[lo:hi].copy()
        if NATIVE is not None:
            out = np.empty(hi - lo, self.dtype)
            NATIVE.permute(out, int(lo), self.n, self._left, self._right, self._key_bytes)
            return out
        return self._numpy(np.arange(lo, hi, dtype=np.int64))

    def array(self) -> np.ndarray:
        """The whole order, aligned (for consumers that need it at once, e.g. a TensorFlow graph's index)."""
        out = aligned_empty((self.n,), self.dtype)
        for lo in range(0, self.n, PIECE):
            out[lo : lo + PIECE] = self.values(lo, min(lo + PIECE, self.n))
        return out
