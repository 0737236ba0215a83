"""The selection analysis on hand-made rows: confidence intervals, slopes, pairs."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.selection import imbalance_slopes, mean_ci, paired_difference, small_budget


def test_mean_ci_by_hand():
    # values 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.3027: half-width 4.3027 / sqrt(3)
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2 and hi - m == pytest.approx(4.302652729 / math.sqrt(3))
    assert math.isnan(mean_ci([5.0])[1]) and mean_ci([5.0])[0] == 5


def _rows():
    rows = []
    for loss, shift in (("simclr", 0.0), ("kcl", 0.1)):
        for ratio in (1.0, 10.0, 100.0):
            for seed in (0, 1):
                for strategy in ("random", "spread"):
                    # entropy falls by 0.05 per decade of imbalance for random, not for spread
                    entropy = 0.9 - (0.05 * math.log10(ratio) if strategy == "random" else 0) + 0.001 * seed
                    rows.append({"encoder": loss, "data.imbalance_ratio": ratio, "seed": seed, "budget": 10,
                                 "strategy": strategy, "entropy": entropy, "top1": 0.5 + shift + 0.01 * seed,
                                 "classes_covered": 6 + (2 if strategy == "spread" else 0) + seed})
    return pd.DataFrame(rows)


def test_slopes_find_the_built_in_dependence():
    slopes = imbalance_slopes(_rows(), "simclr", "entropy").set_index("strategy")
    assert slopes.loc["random", "slope"] == pytest.approx(-0.05)
    assert slopes.loc["spread", "slope"] == pytest.approx(0.0, abs=1e-9)


def test_paired_difference_and_small_budget_gain():
    d = paired_difference(_rows(), "kcl", "simclr", "top1").set_index("strategy")
    assert np.allclose(d["difference"], 0.1) and (d["pairs"] == 6).all()
    table = small_budget(_rows(), 10).set_index(["encoder", "strategy"])
    assert table.loc[("simclr", "spread"), "classes over random"].startswith("2.00")
