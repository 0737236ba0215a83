"""The second question's section: paired pkcl - SimCLR differences, the gap fraction, by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import label_free
from analysis.markdown import markdown_table
from analysis.selection import ENCODER
from trainables import names

PV, TOP1, LIST = label_free.BAL_PV, label_free.BAL_TOP1, label_free.BAL_LIST
# p(V) per (encoder, ratio, seed): pkcl leads SimCLR by 0.02 + 0.01 * seed, KCL by 0.10
PVS = {"simclr": 0.50, "pkcl M=10": 0.52, "kcl": 0.60}


def _frame() -> pd.DataFrame:
    rows, trial = [], 0
    for enc, pv in PVS.items():
        for ratio in (1.0, 10.0):
            for seed in (0, 1, 2):
                trial += 1
                bonus = 0.01 * seed if enc == "pkcl M=10" else 0.0
                for strategy, entropy in (("random", 0.1), ("kmeans", pv + bonus), ("spread", pv + bonus + 0.2)):
                    for budget in (10, 40):
                        rows.append({"trial_id": f"t{trial}", ENCODER: enc, "loss.name": enc.split()[0],
                                     "loss.clusters": 10 if enc.startswith("pkcl") else None,
                                     "data.imbalance_ratio": ratio,
                                     "seed": seed, PV: pv + bonus, TOP1: 0.7, LIST: [0.5, 1.0],
                                     "strategy": strategy, "budget": budget, names.ENTROPY: entropy,
                                     names.CLASSES_COVERED: 5 if enc == "simclr" else 6})
    return pd.DataFrame(rows)


def test_feature_differences_are_paired_per_level_and_pooled():
    table = label_free.paired(label_free.per_trial(_frame()), "pkcl M=10", "simclr", [PV])
    assert list(table["ratio"]) == [1.0, 10.0, "all"]
    d = np.array([0.02, 0.03, 0.04])                 # seeds 0, 1, 2
    half = 4.302653 * d.std(ddof=1) / math.sqrt(3)   # t_{0.975, 2}
    row = table.iloc[0]
    assert row["pairs"] == 3 and row["difference"] == pytest.approx(0.03)
    assert row["ci low"] == pytest.approx(0.03 - half, rel=1e-4)
    assert table.iloc[2]["pairs"] == 6


def test_cv_comes_from_the_per_class_list():
    trials = label_free.per_trial(_frame())
    assert trials[label_free.CV].iloc[0] == pytest.approx(np.std([0.5, 1.0]) / 0.75)


def test_selection_measures_skip_random_and_only_small_budgets():
    budgets = label_free.per_budget(_frame(), num_classes=10)
    assert set(budgets["budget"]) == {10}
    simclr = budgets[budgets[ENCODER] == "simclr"].iloc[0]
    assert simclr[names.ENTROPY] == pytest.approx((0.5 + 0.7) / 2)   # kmeans and spread, not random
    table = label_free.paired(budgets, "pkcl M=10", "simclr", [names.CLASSES_COVERED], by=("budget",))
    assert (table["difference"] == 1).all() and set(table["budget"]) == {10}


def test_gap_fraction_by_hand_and_none_without_a_kcl_lead():
    trials = label_free.per_trial(_frame())
    frac, lo, hi = label_free.gap_closed(trials, "pkcl M=10", PV)
    assert frac == pytest.approx(0.03 / 0.10)
    assert lo <= frac <= hi
    no_lead = trials.assign(**{PV: 0.5})
    assert label_free.gap_closed(no_lead, "pkcl M=10", PV) is None
    # KCL detected *below* SimCLR is no lead to close; for CV (lower is better) it is one
    behind = trials.assign(**{PV: np.where(trials[ENCODER] == "kcl", 0.40 - 0.01 * trials["seed"], trials[PV])})
    assert label_free.gap_closed(behind, "pkcl M=10", PV) is None
    frac, _, _ = label_free.gap_closed(behind, "pkcl M=10", PV, lower_is_better=True)
    assert frac == pytest.approx(-0.03 / 0.11)


def test_claims_only_where_the_interval_excludes_zero():
    row = {"a": "pkcl M=10", "b": "simclr", "ratio": 10.0, "pairs": 3, "difference": 0.03,
           "ci low": 0.005, "ci high": 0.055}
    assert "has higher p(V) than simclr at ratio 10 (better)" in label_free.claim(row, "p(V)")
    assert "(worse)" in label_free.claim(row, "CV", lower_is_better=True)
    assert "no difference detected at n = 3" in label_free.claim({**row, "ci low": -0.01}, "p(V)")


def test_report_section_answers_each_question():
    text = "\n".join(label_free.report_section(_frame(), 10, markdown_table))
    for words in ("pkcl M=10 minus SimCLR: the feature space", "the selected sets",
                  "fraction of KCL's lead closed", "M / C", "0.30"):
        assert words in text
    assert label_free.report_section(_frame()[lambda d: d[ENCODER] != "simclr"], 10, markdown_table) == []
