"""BatchPlan: the same number of batches on every rank; what drop/pad skip or repeat; local shuffle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deeprc_core import BatchPlan, DeepRCError, LocalCommunicator
from tests.core.conftest import EchoComm


def _plans(counts: list[int], bs: int, **kw: object) -> list[BatchPlan]:
    return [BatchPlan(c, bs, EchoComm(r, len(counts), counts), **kw) for r, c in enumerate(counts)]  # type: ignore[arg-type]


def _samples(plan: BatchPlan, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
    idx, pad = [], []
    for b in plan.batches(epoch):
        s = np.arange(b.samples.start, b.samples.stop) if isinstance(b.samples, slice) else b.samples
        idx.append(s)
        pad.append(b.padded if b.padded is not None else np.zeros(len(s), bool))
    return np.concatenate(idx), np.concatenate(pad)


def test_drop_runs_the_smallest_ranks_batches_and_reports_what_it_skips() -> None:
    plans = _plans([130, 100, 64], 32)
    assert {p.num_batches for p in plans} == {2}
    assert [p.dropped_per_epoch for p in plans] == [130 - 64, 100 - 64, 0]
    idx, pad = _samples(plans[0])
    assert idx.tolist() == list(range(64)) and not pad.any()


def test_drop_skips_nothing_when_every_rank_needs_the_same_batches() -> None:
    plans = _plans([5807, 5807, 5806], 64)
    assert {p.num_batches for p in plans} == {91} and all(p.dropped_per_epoch == 0 for p in plans)
    assert len(_samples(plans[2])[0]) == 5806


def test_pad_repeats_own_samples_and_marks_them() -> None:
    plans = _plans([130, 10], 64, even="pad")
    assert {p.num_batches for p in plans} == {3}
    idx, pad = _samples(plans[1])
    assert len(idx) == 130 and idx.tolist() == [i % 10 for i in range(130)]
    assert pad.sum() == 120 == plans[1].padded_per_epoch and not pad[:10].any()
    assert plans[0].padded_per_epoch == 0 and not _samples(plans[0])[1].any()


def test_drop_last() -> None:
    plans = _plans([100, 70], 32, drop_last=True)
    assert {p.num_batches for p in plans} == {2} and plans[0].dropped_per_epoch == 100 - 64
    assert all(len(range(b.samples.start, b.samples.stop)) == 32 for b in plans[0].batches())


def test_empty_rank_and_empty_world_are_clear_errors() -> None:
    with pytest.raises(DeepRCError, match=r"rank\(s\) \[1\].*rebalance"):
        _plans([100, 0], 8)
    with pytest.raises(DeepRCError, match="nothing to repeat"):
        _plans([100, 0], 8, even="pad")
    with pytest.raises(DeepRCError, match="no samples on any of the 2"):
        _plans([0, 0], 8)
    with pytest.raises(DeepRCError, match="fewer samples"):
        _plans([100, 5], 8, drop_last=True)
    with pytest.raises(ValueError, match="batch_size"):
        BatchPlan(10, 0, LocalCommunicator())
    with pytest.raises(ValueError, match="even="):
        BatchPlan(10, 2, LocalCommunicator(), even="spread")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shuffle="):
        BatchPlan(10, 2, LocalCommunicator(), shuffle="sometimes")


def test_local_shuffle_is_seeded_per_epoch_and_rank_and_resumable() -> None:
    a, b = _plans([50, 50], 8, shuffle=True, seed=7)
    e0, e0_again, e1 = _samples(a, 0)[0], _samples(a, 0)[0], _samples(a, 1)[0]
    assert (e0 == e0_again).all() and not (e0 == e1).all() and sorted(e0) == list(range(50))
    assert not (e0 == _samples(b, 0)[0]).all()  # ranks differ
    resumed = np.concatenate([bt.samples for bt in a.batches(0, start=3)])
    assert (resumed == e0[24:]).all()
    one = BatchPlan(50, 8, LocalCommunicator(), shuffle="local", seed=7)
    assert len(one) == 7


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 300), min_size=1, max_size=5).filter(lambda c: all(c)),
    bs=st.integers(1, 64),
    even=st.sampled_from(["drop", "pad"]),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
)
def test_every_rank_runs_the_same_batches_property(
    counts: list[int], bs: int, even: str, shuffle: bool, drop_last: bool
) -> None:
    try:
        plans = _plans(counts, bs, even=even, shuffle=shuffle, drop_last=drop_last)
    except DeepRCError:
        assert drop_last and min(counts) < bs and even == "drop" or (drop_last and max(counts) < bs)
        return
    assert len({p.num_batches for p in plans}) == 1
    for p, n in zip(plans, counts):
        idx, pad = _samples(p)
        assert sum(1 for _ in p.batches()) == p.num_batches
        assert ((0 <= idx) & (idx < n)).all()
        real = idx[~pad]
        assert len(np.unique(real)) == len(real)  # a sample appears once, except as marked padding
        if even == "pad" and not drop_last:
            assert len(np.unique(idx)) == n  # nothing dropped
        if even == "drop":
            assert not pad.any() and len(idx) == n - p.dropped_per_epoch


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize(("counts", "even"), [([100, 70], "pad"), ([100, 70], "drop"), ([70_001, 70_000], "pad")])
def test_epoch_samples_of_any_batch_range_are_what_batches_yields(shuffle: bool, counts: list[int], even: str) -> None:
    for plan in _plans(counts, 32 if counts[0] < 1000 else 4096, shuffle=shuffle, seed=3, even=even):
        idx, pad = _samples(plan, 2)
        whole, whole_pad = plan.epoch_samples(2)
        if whole is not None:
            assert (whole == idx).all()
        assert ((whole_pad if whole_pad is not None else np.zeros(len(idx), bool)) == pad).all()
        bounds, num = plan.bounds(), plan.num_batches
        for first, last in ((0, num), (1, 2), (num - 1, num), (2, 2), (0, 1)):
            got, got_pad = plan.epoch_samples(2, first, last)
            lo, hi = bounds[first], bounds[last]
            if got is None:  # only the whole epoch, unshuffled and unpadded: its samples in order
                assert (first, last) == (0, num) and whole is None
                got = np.arange(lo, hi)
            assert (got == idx[lo:hi]).all(), (first, last)
            assert ((got_pad if got_pad is not None else np.zeros(hi - lo, bool)) == pad[lo:hi]).all()
        with pytest.raises(ValueError, match=f"outside this epoch's 0..{num}"):
            plan.epoch_samples(2, 1, num + 1)
