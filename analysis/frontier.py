"""Pareto frontiers of trials (all objectives maximised unless told otherwise)."""

from __future__ import annotations

import numpy as np


def pareto_mask(points: np.ndarray, maximize: list[bool] | None = None) -> np.ndarray:
    """[n, m] objective values -> [n] bool, True where no other point dominates.

    A point dominates another if it is at least as good in every objective and
    strictly better in one. Rows with a NaN are never on the front.
    """
    pts = np.asarray(points, dtype=float)
    if maximize is not None:
        pts = pts * np.where(maximize, 1.0, -1.0)
    valid = ~np.isnan(pts).any(axis=1)
    mask = np.zeros(len(pts), dtype=bool)
    for i in np.flatnonzero(valid):
        others = pts[valid]
        dominated = ((others >= pts[i]).all(axis=1) & (others > pts[i]).any(axis=1)).any()
        mask[i] = not dominated
    return mask
