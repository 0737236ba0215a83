"""Pareto frontiers of trials.

A point dominates another if it is at least as good in every objective and
strictly better in one; the front is the set of points no other point dominates
(equal points do not dominate each other, so duplicates stay together).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _front_2d(pts: np.ndarray) -> np.ndarray:
    """Maximise both columns of [n, 2] finite points in O(n log n).

    Sorted by the first objective (descending), a point is on the front iff its
    second objective is the best of its tie group and beats every point with a
    strictly larger first objective.
    """
    order = np.lexsort((-pts[:, 1], -pts[:, 0]))
    mask = np.zeros(len(pts), dtype=bool)
    best_before = -np.inf                       # best second value among larger first values
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and pts[order[j], 0] == pts[order[i], 0]:
            j += 1
        group = order[i:j]
        group_best = pts[group[0], 1]           # sorted: the first of a tie group is its best
        mask[group] = (pts[group, 1] == group_best) & (group_best > best_before)
        best_before = max(best_before, group_best)
        i = j
    return mask


def _front_nd(pts: np.ndarray) -> np.ndarray:
    """Any number of objectives, maximised: O(n^2 m)."""
    ge = (pts[:, None, :] >= pts[None, :, :]).all(-1)      # ge[i, j]: i at least as good as j
    gt = (pts[:, None, :] > pts[None, :, :]).any(-1)
    dominated = (ge & gt).any(0)
    return ~dominated


def pareto_mask(points, maximize: Sequence[bool] | None = None) -> np.ndarray:
    """[n, m] objective values -> [n] bool front membership. Rows with a NaN are never on it."""
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2:
        raise ValueError(f"points must be [n, m], got shape {pts.shape}")
    if maximize is not None:
        pts = pts * np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)
    valid = ~np.isnan(pts).any(axis=1)
    mask = np.zeros(len(pts), dtype=bool)
    if valid.any():
        sub = pts[valid]
        mask[valid] = _front_2d(sub) if sub.shape[1] == 2 else _front_nd(sub)
    return mask


def pareto_front(df: pd.DataFrame, objectives: Sequence[str],
                 maximize: Sequence[bool] | None = None) -> np.ndarray:
    """Front membership of the rows of `df` over the named objective columns (all maximised by default)."""
    return pareto_mask(df[list(objectives)].to_numpy(dtype=float), maximize)


def fronts_by(df: pd.DataFrame, objectives: Sequence[str], by: Sequence[str],
              maximize: Sequence[bool] | None = None) -> pd.Series:
    """Front membership computed separately within each group (e.g. per loss and level)."""
    member = pd.Series(False, index=df.index)
    for _, group in df.groupby(list(by), dropna=False):
        member[group.index] = pareto_front(group, objectives, maximize)
    return member


def _hypervolume(pts: np.ndarray) -> float:
    """Volume of the union of the boxes [0, p] of [n, m] points (> 0, maximised):
    m = 1, the largest value; else slices along the last objective (HSO), each an
    (m - 1)-dimensional hypervolume of the points that reach it."""
    if len(pts) == 0:
        return 0.0
    if pts.shape[1] == 1:
        return float(pts.max())
    levels = np.unique(pts[:, -1])[::-1]                   # descending
    volume = 0.0
    for top, below in zip(levels, [*levels[1:], 0.0]):
        volume += _hypervolume(pts[pts[:, -1] >= top, :-1]) * (top - below)
    return volume


def hypervolume(df: pd.DataFrame, objectives: Sequence[str], reference: Sequence[float] | None = None) -> float:
    """The hypervolume of the rows' points: the volume of the objective space (all
    maximised) that some row dominates and that dominates `reference` (default: 0 in
    each objective). Rows with a NaN, or not beyond the reference in every objective,
    add nothing. Exact: O(n^m) slices, fine for a sweep's trials."""
    pts = df[list(objectives)].to_numpy(dtype=float).reshape(len(df), len(objectives))
    ref = np.zeros(len(objectives)) if reference is None else np.asarray(reference, dtype=float)
    pts = pts[~np.isnan(pts).any(axis=1)] - ref
    return _hypervolume(pts[(pts > 0).all(axis=1)])
