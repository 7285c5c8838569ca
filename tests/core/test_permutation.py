"""Permutation: a computed shuffled order is an exact, reproducible, well-mixed permutation held in no memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from deeprc_core.permutation import HELD_BELOW, Permutation
from deeprc_core.stacking import STACK_KERNEL

from deeprc_core import BatchPlan, LocalCommunicator
from deeprc_core import permutation as permutation_module

# sizes on both sides of the held/computed line, at and past powers of two (the network's domain)
SIZES = [0, 1, 2, 5, 1000, HELD_BELOW - 1, HELD_BELOW, HELD_BELOW + 1, 2**17, 2**17 + 3, 300_007]


@pytest.mark.parametrize("n", SIZES)
def test_every_sample_appears_exactly_once(n: int) -> None:
    order = Permutation(n, [3, 1, 0]).array()
    assert order.dtype == np.int32 and len(order) == n
    assert np.array_equal(np.sort(order), np.arange(n))


@pytest.mark.parametrize("n", [HELD_BELOW - 1, 2**17 + 3])
def test_values_and_take_are_the_same_order_as_the_whole_array(n: int) -> None:
    perm = Permutation(n, [0, 4, 2])
    order = perm.array()
    assert np.array_equal(perm.values(1000, 9000), order[1000:9000])
    assert np.array_equal(perm.values(n - 7, n), order[n - 7 :])
    pos = np.random.default_rng(1).integers(0, n, 5000)
    assert np.array_equal(perm.take(pos), order[pos])
    assert np.array_equal(Permutation(n, [0, 4, 2]).array(), order)  # the key alone fixes the order


def test_keys_give_different_orders() -> None:
    n = 2**17 + 3
    a, b, c = (Permutation(n, key).values(0, 64) for key in ([0, 0, 0], [0, 1, 0], [0, 0, 1]))
    assert not np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(b, c)


def test_positions_outside_the_range_are_an_error() -> None:
    perm = Permutation(HELD_BELOW + 10, 0)
    with pytest.raises(IndexError, match="range"):
        perm.values(0, HELD_BELOW + 11)
    with pytest.raises(IndexError, match="range"):
        perm.take(np.array([-1]))


@pytest.mark.skipif(STACK_KERNEL != "compiled", reason="deeprc_core._stack is not built")
def test_the_kernel_and_numpy_compute_the_same_values() -> None:
    for n in (HELD_BELOW, 2**17 + 3, 3_000_001):
        perm = Permutation(n, [9, n, 1])
        pos = np.random.default_rng(n).integers(0, n, 20_000)
        assert np.array_equal(perm.take(pos), perm._numpy(pos))
        assert np.array_equal(perm.values(n - 5000, n), perm._numpy(np.arange(n - 5000, n)))


def test_the_computed_order_mixes_like_a_uniform_permutation() -> None:
    """Statistics a biased shuffle would miss: fixed points ~ Poisson(1), descents ~ 1/2, first places uniform."""
    n, keys = HELD_BELOW + 1, 200
    fixed, descents, first = [], [], np.zeros(16)
    for k in range(keys):
        order = Permutation(n, [k, 0, 0]).array()
        fixed.append(int((order == np.arange(n)).sum()))
        descents.append(float((np.diff(order) < 0).mean()))
        np.add.at(first, order[:64] * 16 // n, 1)
    assert 0.7 < np.mean(fixed) < 1.3  # Poisson(1): sd of the mean 0.07
    assert abs(np.mean(descents) - 0.5) < 5 * np.sqrt((n + 1) / 12) / n / np.sqrt(keys)
    expected = keys * 64 / 16
    assert ((first - expected) ** 2 / expected).sum() < 40  # chi-square, 15 df: p < 0.001


def test_a_shuffled_plan_holds_no_whole_order() -> None:
    n, bs = 4_000_000, 1024
    plan = BatchPlan(n, bs, LocalCommunicator(), shuffle=True, seed=5)
    tracemalloc.start()
    try:
        seen = 0
        for b in plan.batches(3):
            assert isinstance(b.samples, np.ndarray)
            seen += len(b.samples)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == n
    assert peak < n  # the whole int32 order would be 4n bytes
    perm = plan.permutation(3)
    whole = None if perm is None else perm.array()
    assert whole is not None and np.array_equal(whole[:bs], next(iter(plan.batches(3))).samples)


def test_numpy_fallback_gives_the_kernels_order(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 2**17 + 3
    expected = Permutation(n, [1, 2, 3]).values(0, 4096)
    monkeypatch.setattr(permutation_module, "NATIVE", None)
    assert np.array_equal(Permutation(n, [1, 2, 3]).values(0, 4096), expected)
