"""Multi-objective ranking of one rung's results, for MO-ASHA (study.moasha).

Points are [n, m] objective values, all maximised, in arrival order (row i arrived
i-th). The ranking is NSGA-II's (Deb et al., 2002), as Syne Tune's MOASHA uses it:

1. non-dominated sorting: front 0 is the Pareto front of all points, front 1 that of
   the rest, and so on (equal points do not dominate each other: they share a front);
2. within a front, the crowding distance, over each objective's distinct values so
   that equal values get equal distances whatever their arrival: a point at the
   front's lowest or highest value gets infinity, another one (next - previous) /
   (max - min), next and previous being the nearest distinct values above and below
   its own; the distances are summed over objectives (a front of one or two points:
   infinity);
3. order: front ascending, then crowding distance descending (the front's spread ends
   and its sparse regions first), then arrival (earlier first).

A point with a NaN in any objective ranks after every finite point (a trial whose
objectives could not be measured), in arrival order. `keep(points, eta)` says which
points are in the top ceil(n / eta), the rule study.moasha applies at each rung.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.frontier import pareto_mask


def nondominated_fronts(points) -> np.ndarray:
    """[n, m] -> [n] front index (0 = the Pareto front); -1 for rows with a NaN."""
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    front = np.full(len(pts), -1)
    left = np.flatnonzero(~np.isnan(pts).any(axis=1))
    level = 0
    while len(left):
        on = pareto_mask(pts[left])
        front[left[on]] = level
        left, level = left[~on], level + 1
    return front


def crowding_distance(points) -> np.ndarray:
    """[n, m] points of one front -> [n] crowding distances (rule 2 above)."""
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    distance = np.zeros(len(pts))
    if len(pts) <= 2:
        return np.full(len(pts), math.inf)
    for column in pts.T:
        values = np.unique(column)                          # sorted, distinct
        pos = np.searchsorted(values, column)
        end = (pos == 0) | (pos == len(values) - 1)
        distance[end] = math.inf
        inner = ~end
        distance[inner] += (values[pos[inner] + 1] - values[pos[inner] - 1]) / (values[-1] - values[0])
    return distance


def rank(points) -> np.ndarray:
    """[n, m] -> [n] permutation: the points' indices best first (rules 1 to 3)."""
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    front = nondominated_fronts(pts)
    crowd = np.zeros(len(pts))
    for level in range(front.max(initial=-1) + 1):
        members = np.flatnonzero(front == level)
        crowd[members] = crowding_distance(pts[members])
    last = front.max(initial=-1) + 1                    # NaN rows after every front
    keys = [(last if f < 0 else f, -c if f >= 0 else 0.0, i) for i, (f, c) in enumerate(zip(front, crowd))]
    return np.array(sorted(range(len(pts)), key=keys.__getitem__), dtype=int)


def keep(points, eta: float) -> np.ndarray:
    """[n] bool: the points in the top ceil(n / eta) of rank(points)."""
    n = len(points)
    top = math.ceil(n / eta)
    kept = np.zeros(n, dtype=bool)
    kept[rank(points)[:top]] = True
    return kept
