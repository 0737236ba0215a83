"""Loss comparisons paired by seed, against intervals computed by hand."""

import math

import pandas as pd
import pytest

from analysis.comparisons import claim, paired_by_seed, report_section
from analysis.markdown import markdown_table

T_975_2 = 4.302652729911275          # Student's t, 0.975 quantile, 2 degrees of freedom


def _rows(kcl: list[float], ce: list[float], ratio: float = 100.0, metric: str = "lt/balancedness"):
    other = "lt/top1" if metric == "lt/balancedness" else "lt/balancedness"
    return [{"loss.name": loss, "data.imbalance_ratio": ratio, "seed": s, metric: v, other: 0.5}
            for loss, values in (("kcl", kcl), ("ce", ce)) for s, v in enumerate(values)]


def _one(table: pd.DataFrame, metric: str):
    (row,) = table[table["metric"] == metric].to_dict("records")
    return row


def test_a_difference_is_claimed_only_when_its_interval_excludes_zero():
    # differences ce - kcl: the pair is (ce, kcl) by name; kcl exceeds ce by 0.10, 0.11, 0.12
    df = pd.DataFrame(_rows([0.60, 0.61, 0.62], [0.50, 0.50, 0.50]))
    row = _one(paired_by_seed(df), "balancedness")
    assert (row["a"], row["b"], row["pairs"]) == ("ce", "kcl", 3)
    # d = -0.10, -0.11, -0.12: mean -0.11, sd 0.01, half-width t * 0.01 / sqrt(3)
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert row["difference"] == pytest.approx(-0.11)
    assert (row["ci low"], row["ci high"]) == pytest.approx((-0.11 - half, -0.11 + half))
    assert claim(row) == ("CE is less balanced than KCL at ratio 100 "
                          f"(p(V) -0.110 [{-0.11 - half:+.3f}, {-0.11 + half:+.3f}], n = 3 paired seeds)")


def test_an_interval_that_contains_zero_says_no_difference_detected():
    df = pd.DataFrame(_rows([0.60, 0.70, 0.80], [0.50, 0.50, 0.50], ratio=10.0))
    row = _one(paired_by_seed(df), "balancedness")
    half = T_975_2 * 0.1 / math.sqrt(3)                       # d = -0.1, -0.2, -0.3: sd 0.1
    assert (row["ci low"], row["ci high"]) == pytest.approx((-0.2 - half, -0.2 + half))
    assert claim(row).startswith("CE and KCL at ratio 10, p(V): no difference detected at n = 3 (p(V) -0.200")
    # the top-1 of both is 0.5 on every seed: a difference of exactly 0, nothing claimed
    top1 = _one(paired_by_seed(df), "top1")
    assert top1["difference"] == 0 and "no difference detected" in claim(top1)


def test_unpaired_seeds_and_searched_levels_are_left_out():
    rows = _rows([0.6, 0.7], [0.5, 0.5, 0.5])                # seed 2 has no kcl trial
    single = _one(paired_by_seed(pd.DataFrame(rows)), "balancedness")
    assert single["pairs"] == 2
    searched = pd.DataFrame(rows + [{**rows[0], "loss.k": 3}])      # two kcl trials of seed 0
    assert paired_by_seed(searched).empty and report_section(searched, "lt", markdown_table) == []
    one = _one(paired_by_seed(pd.DataFrame(_rows([0.6], [0.5]))), "balancedness")
    assert math.isnan(one["ci low"]) and "one paired seed, no interval" in claim(one)
