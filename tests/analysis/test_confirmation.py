"""The confirmed frontier's numbers against hand-computed means, t intervals, overstatements
and paired differences (analysis.confirmation)."""

import math

import pandas as pd
import pytest

from analysis.confirmation import (confirmed_table, member_differences, report_section, sentence, split,
                                   summary_lines, winners_curse)
from analysis.markdown import markdown_table
from trainables import names

T2 = 4.302652729911275           # Student's t, 0.975 quantile, 2 degrees of freedom (tables)
TOP1, PV = "lt/top1", "lt/balancedness"
OBJECTIVES = [TOP1, PV]


def row(trial_id, k, top1, pv, seed=0, confirm_of=None, status="ok", ratio=10.0):
    return {"trial_id": trial_id, "loss.name": "kcl", "data.imbalance_ratio": ratio, "loss.k": k,
            "loss.temperature": 0.3, "optim.lr": 0.05, "optim.weight_decay": 5e-4, "seed": seed,
            names.STATUS: status, TOP1: top1, PV: pv, names.CONFIRM_COLUMN: confirm_of}


def frame() -> pd.DataFrame:
    """Members A (k=6) and B (k=2) of one front, each confirmed on seeds 5, 6, 7; a third
    search trial C off the front; one confirmation of B failed on an extra seed."""
    rows = [row("A", 6, 0.80, 0.70), row("B", 2, 0.75, 0.90), row("C", 3, 0.50, 0.50)]
    rows += [row(f"a{s}", 6, top1, pv, s, "A") for s, top1, pv in ((5, 0.70, 0.80), (6, 0.74, 0.84), (7, 0.72, 0.82))]
    rows += [row(f"b{s}", 2, top1, pv, s, "B") for s, top1, pv in ((5, 0.60, 0.82), (6, 0.66, 0.80), (7, 0.61, 0.87))]
    rows.append(row("b8", 2, math.nan, math.nan, 8, "B", status="error"))
    return pd.DataFrame(rows)


def test_split_keeps_the_search_rows_apart_from_the_confirmations():
    search, confirmations = split(frame())
    assert list(search["trial_id"]) == ["A", "B", "C"] and len(confirmations) == 7
    older = frame().drop(columns=[names.CONFIRM_COLUMN])           # rows from before the column
    assert len(split(older)[0]) == 10 and split(older)[1].empty


def test_confirmed_mean_interval_and_overstatement_by_hand():
    table = confirmed_table(frame(), OBJECTIVES).set_index("trial_id")
    a = table.loc["A"]
    assert a["seeds"] == 3 and a["member"] == "k=6"
    assert a[f"{TOP1} search"] == 0.80
    assert a[f"{TOP1} confirmed"] == pytest.approx(0.72)
    half = T2 * 0.02 / math.sqrt(3)                                # sd of 0.70, 0.74, 0.72 is 0.02
    assert (a[f"{TOP1} low"], a[f"{TOP1} high"]) == (pytest.approx(0.72 - half), pytest.approx(0.72 + half))
    assert a[f"{TOP1} overstated"] == pytest.approx(0.08)
    b = table.loc["B"]
    assert b["seeds"] == 3 and b["runs"] == 4                       # the failed run is not a seed
    assert b[f"{PV} confirmed"] == pytest.approx(0.83) and b[f"{PV} overstated"] == pytest.approx(0.07)


def test_winners_curse_is_the_mean_overstatement_over_members():
    curse = winners_curse(confirmed_table(frame(), OBJECTIVES), OBJECTIVES).set_index("objective")
    # top-1: A 0.80 - 0.72 = 0.08, B 0.75 - 0.6233 = 0.12667; mean 0.10333
    over = [0.08, 0.75 - (0.60 + 0.66 + 0.61) / 3]
    mean, sd = sum(over) / 2, abs(over[0] - over[1]) / math.sqrt(2)
    half = 12.706204736174698 * sd / math.sqrt(2)                  # t, 0.975, 1 degree of freedom
    assert curse.loc[TOP1, "members"] == 2
    assert curse.loc[TOP1, "overstated"] == pytest.approx(mean)
    assert curse.loc[TOP1, "ci low"] == pytest.approx(mean - half)
    # p(V): A 0.70 - 0.82 = -0.12 (the search understated it), B 0.90 - 0.83 = 0.07
    assert curse.loc[PV, "overstated"] == pytest.approx((-0.12 + 0.07) / 2)


def test_members_compare_paired_by_seed():
    diffs = {r["objective"]: r for r in member_differences(frame(), OBJECTIVES).to_dict("records")}
    top1 = diffs[TOP1]
    d = [0.10, 0.08, 0.11]                                         # A - B on seeds 5, 6, 7
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    assert (top1["a"], top1["b"], top1["pairs"]) == ("k=6", "k=2", 3)        # by trial id: A, B
    assert top1["difference"] == pytest.approx(mean)
    assert top1["ci low"] == pytest.approx(mean - T2 * sd / math.sqrt(3))
    assert top1["ci high"] == pytest.approx(mean + T2 * sd / math.sqrt(3))
    assert "k=6 beats k=2" in sentence(top1) and "n = 3 seeds" in sentence(top1)
    pv = diffs[PV]                                                 # -0.02, +0.04, -0.05: no difference
    assert pv["ci low"] < 0 < pv["ci high"]
    assert "no difference detected at n = 3" in sentence(pv)


def test_summary_and_report_sections_say_it_in_words():
    lines = "\n".join(summary_lines(frame(), OBJECTIVES))
    assert "Confirmed frontier" in lines and "0.720 [" in lines
    assert f"{TOP1}: the search's value exceeded the confirmed mean by +0.103" in lines
    assert "k=6 beats k=2" in lines and "no difference detected in the other 1" in lines
    section = "\n\n".join(report_section(frame(), OBJECTIVES, markdown_table))
    assert section.startswith("## Confirmed frontier") and "### Winner's curse" in section
    assert "| kcl | 10 | k=2 | B | 3 | 0.750 |" in section
    assert summary_lines(split(frame())[0], OBJECTIVES) == []      # no confirmations: nothing
