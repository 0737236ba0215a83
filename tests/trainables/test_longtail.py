"""Value tests for trainables/data/longtail.py: the CIFAR-LT exponential profile,
its fixed-total variant, the seeded class permutation and nested per-class selection."""

from __future__ import annotations

import pytest
import torch

from trainables.data.longtail import class_permutation, longtail_counts, select_per_class


# ----------------------------------------------------------------------------- longtail_counts

@pytest.mark.parametrize("n_max, c, ratio, total", [(5000, 10, 100, 12406), (500, 100, 100, 10847)])
def test_standard_cifar_lt_totals(n_max, c, ratio, total):
    counts = longtail_counts(n_max, c, ratio)
    assert len(counts) == c
    assert sum(counts) == total
    assert counts[0] == n_max
    assert counts[-1] == int(n_max / ratio)       # 50 and 5 (the formula gives exactly these)
    assert counts == sorted(counts, reverse=True)


def test_cifar10_lt_profile_values():
    # int(5000 * 100 ** (-i / 9)), i = 0..9
    assert longtail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.mark.parametrize("n_max, c, ratio", [(300, 5, 3), (100, 4, 7), (600, 6, 10), (1000, 3, 2.5)])
def test_counts_follow_formula(n_max, c, ratio):
    counts = longtail_counts(n_max, c, ratio)
    assert counts == [int(n_max * ratio ** (-i / (c - 1))) for i in range(c)]
    assert counts[0] == n_max
    assert counts[-1] == int(n_max * ratio ** -1.0)


def test_ratio_one_gives_all_equal():
    assert longtail_counts(500, 10, 1) == [500] * 10
    assert longtail_counts(0, 7, 1, total=700) == [100] * 7


@pytest.mark.parametrize("c, ratio, total", [
    (10, 1, 1234), (10, 10, 2000), (10, 100, 12406), (100, 100, 10847),
    (7, 3.3, 999), (5, 50, 1000), (3, 2, 10), (20, 17.5, 5001),
])
def test_fixed_total_sums_exactly_and_is_non_increasing(c, ratio, total):
    counts = longtail_counts(123, c, ratio, total=total)
    assert len(counts) == c
    assert sum(counts) == total
    assert all(isinstance(n, int) for n in counts)
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert counts[-1] >= 1


def test_fixed_total_keeps_the_ratio_when_tail_is_large():
    counts = longtail_counts(0, 10, 10, total=2000)
    assert sum(counts) == 2000
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.1)
    # Each count is within 1 of its exact share of the shape.
    shape = [10 ** (-i / 9) for i in range(10)]
    exact = [2000 * s / sum(shape) for s in shape]
    assert all(abs(n - e) < 1 for n, e in zip(counts, exact))


def test_fixed_total_ignores_n_max():
    assert longtail_counts(1, 10, 20, total=3000) == longtail_counts(99999, 10, 20, total=3000)


def test_ratio_leaving_a_class_empty_raises():
    with pytest.raises(ValueError):
        longtail_counts(50, 10, 100)        # int(50 / 100) == 0
    with pytest.raises(ValueError):
        longtail_counts(0, 10, 1000, total=100)


@pytest.mark.parametrize("ratio", [0.5, 0.99, 0])
def test_ratio_below_one_raises(ratio):
    with pytest.raises(ValueError):
        longtail_counts(500, 10, ratio)
    with pytest.raises(ValueError):
        longtail_counts(500, 10, ratio, total=1000)


# ----------------------------------------------------------------------------- class_permutation

def test_class_permutation():
    for c in (1, 5, 10, 100):
        perm = class_permutation(c, seed=3)
        assert sorted(perm) == list(range(c))
        assert class_permutation(c, seed=3) == perm
    perms = {tuple(class_permutation(10, seed=s)) for s in range(5)}
    assert len(perms) > 1


# ----------------------------------------------------------------------------- select_per_class

def _pool(n_classes=4, per_class=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return labels[torch.randperm(len(labels), generator=g)]


def test_select_per_class_counts_and_uniqueness():
    labels = _pool()
    counts = [30, 12, 0, 5]
    idx = select_per_class(labels, counts, seed=7)
    assert idx.dtype == torch.int64
    assert len(idx) == sum(counts)
    assert len(set(idx.tolist())) == len(idx)
    assert torch.equal(idx, idx.sort().values)
    picked = labels[idx]
    for c, n in enumerate(counts):
        assert int((picked == c).sum()) == n


def test_select_per_class_seeded():
    labels = _pool()
    counts = [10, 8, 6, 4]
    a = select_per_class(labels, counts, seed=1)
    assert torch.equal(a, select_per_class(labels, counts, seed=1))
    assert not torch.equal(a, select_per_class(labels, counts, seed=2))


def test_select_per_class_is_nested():
    labels = _pool(n_classes=5, per_class=40)
    big = longtail_counts(40, 5, 4)
    small = longtail_counts(40, 5, 20)
    assert all(s <= b for s, b in zip(small, big))
    for seed in (0, 5):
        big_idx = set(select_per_class(labels, big, seed).tolist())
        small_idx = set(select_per_class(labels, small, seed).tolist())
        assert small_idx <= big_idx
        assert len(small_idx) == sum(small) < len(big_idx) == sum(big)


def test_select_per_class_too_many_raises():
    labels = _pool(n_classes=3, per_class=10)
    with pytest.raises(ValueError):
        select_per_class(labels, [10, 11, 0], seed=0)
    with pytest.raises(ValueError):
        select_per_class(labels, [0, 0, 0, 1], seed=0)   # class 3 absent from the pool
