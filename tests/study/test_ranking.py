"""MO-ASHA's ranking (study.ranking) against brute force, ties and NaNs included."""

import math
import random

import numpy as np
import pytest

from study.ranking import crowding_distance, keep, nondominated_fronts, rank


def _dominates(a, b) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def _brute_fronts(pts) -> list[int]:
    """A point's front is the length of the longest chain of points dominating it."""
    finite = [i for i, p in enumerate(pts) if not any(math.isnan(v) for v in p)]
    memo: dict[int, int] = {}

    def depth(i):
        if i not in memo:
            memo[i] = max((1 + depth(j) for j in finite if _dominates(pts[j], pts[i])), default=0)
        return memo[i]
    return [depth(i) if i in finite else -1 for i in range(len(pts))]


def _brute_crowding(pts, members) -> dict[int, float]:
    """Per point and objective: infinity at the front's lowest or highest value, else the
    gap between the nearest distinct values below and above its own, over the span."""
    if len(members) <= 2:
        return {i: math.inf for i in members}
    out = {i: 0.0 for i in members}
    for o in range(len(pts[0])):
        values = [pts[i][o] for i in members]
        low, high = min(values), max(values)
        for i in members:
            v = pts[i][o]
            if v in (low, high):
                out[i] = math.inf
            else:
                out[i] += (min(x for x in values if x > v) - max(x for x in values if x < v)) / (high - low)
    return out


def _brute_rank(pts) -> list[int]:
    fronts = _brute_fronts(pts)
    crowd = {}
    for level in set(fronts) - {-1}:
        crowd.update(_brute_crowding(pts, [i for i, f in enumerate(fronts) if f == level]))
    last = max(fronts, default=-1) + 1
    return sorted(range(len(pts)), key=lambda i: (last, 0.0, i) if fronts[i] < 0 else
                  (fronts[i], -crowd[i], i))


def _random_points(rng: random.Random) -> list[list[float]]:
    n, m = rng.randint(1, 12), rng.choice([2, 2, 3])
    # few distinct values: equal coordinates and duplicate points are common
    pts = [[float(rng.randint(0, 3)) / 3 for _ in range(m)] for _ in range(n)]
    for p in pts:
        if rng.random() < 0.1:
            p[rng.randrange(m)] = math.nan
    return pts


@pytest.mark.parametrize("seed", range(200))
def test_ranking_equals_brute_force_on_random_fronts(seed):
    pts = _random_points(random.Random(seed))
    assert nondominated_fronts(pts).tolist() == _brute_fronts(pts)
    assert rank(pts).tolist() == _brute_rank(pts)
    order = _brute_rank(pts)
    top = math.ceil(len(pts) / 3)
    assert np.flatnonzero(keep(pts, 3)).tolist() == sorted(order[:top])


def test_a_hand_ranked_rung():
    # (top1, p(V)): 0..2 and 4 are the front, 3 is dominated by 0 and 4, 5 has a NaN.
    pts = [[1, 1], [2, 0], [0, 2], [0.5, 0.5], [1, 1], [math.nan, 1]]
    assert nondominated_fronts(pts).tolist() == [0, 0, 0, 1, 0, -1]
    # ends 1 and 2 first; the duplicates 0 and 4 each get (2 - 0)/2 + (2 - 0)/2 = 2.0
    # (equal values, equal distances), so arrival decides
    assert rank(pts).tolist() == [1, 2, 0, 4, 3, 5]
    assert keep(pts, 3).tolist() == [False, True, True, False, False, False]     # ceil(6 / 3) = 2
    assert keep(pts, 2).tolist() == [True, True, True, False, False, False]


def test_crowding_distance_by_hand():
    # objective 0 order: (0,2) (1,1) (1.5,.5) (2,0), span 2; objective 1: the reverse
    d = crowding_distance([[1, 1], [2, 0], [0, 2], [1.5, 0.5]])
    assert d[1] == d[2] == math.inf
    assert d[0] == pytest.approx((1.5 - 0) / 2 + (2 - 0.5) / 2)
    assert d[3] == pytest.approx((2 - 1) / 2 + (1 - 0) / 2)


def test_the_first_result_at_a_rung_always_continues_and_one_of_two_does():
    assert keep([[0.1, 0.1]], 3).tolist() == [True]
    assert keep([[0.5, 0.5], [0.1, 0.1]], 3).tolist() == [True, False]       # as ASHA's percentile
    assert keep([[0.1, 0.1], [0.5, 0.5]], 3).tolist() == [False, True]


def test_equal_results_are_kept_in_arrival_order_however_many_arrive():
    # duplicates share their crowding distance, so the earliest ones win the places
    for n in range(1, 10):
        assert np.flatnonzero(keep([[0.5, 0.5]] * n, 3)).tolist() == list(range(math.ceil(n / 3)))


@pytest.mark.parametrize("seed", range(20))
def test_crowding_distance_does_not_depend_on_arrival(seed):
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 4, (8, 2)) / 3
    perm = rng.permutation(8)
    assert np.array_equal(crowding_distance(pts)[perm], crowding_distance(pts[perm]))
