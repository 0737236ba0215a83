"""The study's second question, in the selection report: can KCL's idea balance a feature
space without labels? Pseudo-label KCL (`pkcl`, positives from clusters of its own
features) against SimCLR (label-free) and KCL (labels), on the select study's trials.

Every comparison is paired: the two encoders' trials with the same imbalance ratio and
seed (the same long-tailed pool and initialisation seed) form a pair, and a table row is

    d = mean over pairs of (measure(a) - measure(b)),  95% t interval,  n = pairs

at each imbalance level, and over all levels together. A sentence claims a difference
only where the interval excludes 0. The measures:

    feature space   the balanced probe's p(V), CV (std / mean of the class accuracies;
                    lower is more balanced) and top-1, one value per trial
    selections      label entropy and classes covered at each budget B <= C, averaged per
                    trial over the strategies that read the features (`random` does not)

The fraction of the gap closed, (pkcl - SimCLR) / (KCL - SimCLR) of the pooled means,
gets a bootstrap interval over the matched (ratio, seed) units; it is printed only
where KCL's own lead over SimCLR is detected (else the fraction has no meaning).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.selection import ENCODER, fmt_ci, mean_ci
from trainables import names

BAL_PV, BAL_TOP1, BAL_LIST = (names.probe_metric(names.BALANCED, m)
                              for m in (names.BALANCEDNESS, names.TOP1, names.PER_CLASS))
CV = "balanced CV"
FEATURE_MEASURES = {BAL_PV: "p(V)", CV: "CV", BAL_TOP1: "top-1"}       # column -> label
SELECTION_MEASURES = {names.ENTROPY: "label entropy", names.CLASSES_COVERED: "classes covered"}
UNIT = ["data.imbalance_ratio", "seed"]
COLUMNS = ["a", "b", "measure", "ratio", "pairs", "difference", "ci low", "ci high"]


def per_trial(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: encoder, ratio, seed and the feature measures (CV from the list)."""
    trials = df.drop_duplicates("trial_id").copy()
    trials[CV] = [np.std(a) / np.mean(a) if a is not None and len(a) and np.mean(a) > 0 else math.nan
                  for a in trials[BAL_LIST]]
    return trials[[ENCODER, *UNIT, *FEATURE_MEASURES]]


def per_budget(df: pd.DataFrame, num_classes: int) -> pd.DataFrame:
    """One row per trial and budget B <= C: the selection measures averaged over the
    strategies that read the features."""
    small = df[(df["budget"] <= num_classes) & (df["strategy"] != "random")]
    return small.groupby([ENCODER, *UNIT, "budget"], as_index=False)[list(SELECTION_MEASURES)].mean()


def paired(frame: pd.DataFrame, a: str, b: str, measures, by=()) -> pd.DataFrame:
    """Rows of COLUMNS (plus `by`): a - b paired on (ratio, seed, *by), per level and over
    all levels ("all"), per measure."""
    keys = [*UNIT, *by]
    wide = frame[frame[ENCODER].isin([a, b])].pivot_table(index=keys, columns=ENCODER, values=list(measures))
    rows = []
    for measure in measures:
        if (measure, a) not in wide or (measure, b) not in wide:
            continue
        d = (wide[(measure, a)] - wide[(measure, b)]).dropna().rename("d").reset_index()
        for group, g in d.groupby(list(by)) if by else [((), d)]:
            extra = dict(zip(by, group if isinstance(group, tuple) else (group,)))
            for ratio, level in [*g.groupby("data.imbalance_ratio"), ("all", g)]:
                rows.append({"a": a, "b": b, "measure": measure, "ratio": ratio, **extra,
                             "pairs": len(level), **dict(zip(COLUMNS[-3:], mean_ci(level["d"])))})
    return pd.DataFrame(rows, columns=[*COLUMNS[:4], *by, *COLUMNS[4:]])


def gap_closed(frame: pd.DataFrame, pkcl: str, measure: str, lower_is_better: bool = False,
               draws: int = 2000, seed: int = 0) -> tuple[float, float, float] | None:
    """(fraction, low, high) of KCL's lead over SimCLR that `pkcl` closes, pooled over the
    units (ratio, seed) all three encoders ran (other rows of a unit, e.g. budgets,
    averaged first, so that a trial counts once); None where KCL's lead is not detected
    (its paired interval does not lie wholly on the better side of 0)."""
    wide = frame.pivot_table(index=UNIT, columns=ENCODER, values=measure)
    if not {pkcl, "simclr", "kcl"} <= set(wide):
        return None
    units = wide[[pkcl, "simclr", "kcl"]].dropna().to_numpy()
    lead = units[:, 2] - units[:, 1]
    _, lo, hi = mean_ci(lead)
    if len(units) < 2 or math.isnan(lo) or (hi >= 0 if lower_is_better else lo <= 0):
        return None
    rng = np.random.default_rng(seed)
    boot = rng.integers(0, len(units), size=(draws, len(units)))
    fractions = (units[boot, 0] - units[boot, 1]).mean(1) / lead[boot].mean(1)
    point = float((units[:, 0] - units[:, 1]).mean() / lead.mean())
    return point, float(np.quantile(fractions, 0.025)), float(np.quantile(fractions, 0.975))


def claim(row: dict, label: str, lower_is_better: bool = False) -> str:
    """'a is more/less balanced ... than b' where the interval excludes 0, else 'no difference
    detected at n = ...'."""
    where = "over all levels" if row["ratio"] == "all" else f"at ratio {row['ratio']:g}"
    budget = f", budget {int(row['budget'])}" if "budget" in row else ""
    n, m, lo, hi = int(row["pairs"]), row["difference"], row["ci low"], row["ci high"]
    numbers = f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}], n = {n}" if not math.isnan(lo) else f"{m:+.3f}, n = {n}"
    if math.isnan(lo) or lo <= 0 <= hi:
        return f"{row['a']} vs {row['b']} {where}{budget}, {label}: no difference detected at n = {n} ({numbers})"
    higher = lo > 0
    word = "higher" if higher else "lower"
    verdict = " (better)" if higher != lower_is_better else " (worse)"
    return f"{row['a']} has {word} {label} than {row['b']} {where}{budget}{verdict} ({numbers})"


def _formatted(table: pd.DataFrame, labels: dict) -> pd.DataFrame:
    out = table.assign(measure=[labels[m] for m in table["measure"]])
    out["difference"] = [fmt_ci(m, lo, hi) for m, lo, hi in table[COLUMNS[-3:]].to_numpy()]
    return out.drop(columns=["ci low", "ci high"])


def _claims(table: pd.DataFrame, labels: dict) -> str:
    return "\n".join(f"- {claim(row, labels[row['measure']], row['measure'] == CV)}"
                     for row in table.to_dict("records"))


def _gap_table(trials: pd.DataFrame, budgets: pd.DataFrame, pkcls: list[str]) -> pd.DataFrame:
    rows = []
    for enc in pkcls:
        for frame, measures in ((trials, FEATURE_MEASURES), (budgets, SELECTION_MEASURES)):
            for measure, label in measures.items():
                got = gap_closed(frame, enc, measure, lower_is_better=measure == CV)
                rows.append({"encoder": enc, "measure": label,
                             "fraction of KCL's lead closed": "KCL's lead over SimCLR not detected"
                             if got is None else fmt_ci(*got, digits=2)})
    return pd.DataFrame(rows)


def _m_table(trials: pd.DataFrame, budgets: pd.DataFrame, clusters: pd.Series, num_classes: int) -> pd.DataFrame:
    """Per pkcl encoder (clusters: encoder -> its M): the pooled differences from SimCLR and
    M / C, side by side."""
    rows = []
    for enc, m in clusters.items():
        row = {"encoder": enc, "M / C": f"{m / num_classes:g}"}
        for frame, measures in ((trials, FEATURE_MEASURES), (budgets, SELECTION_MEASURES)):
            table = paired(frame, enc, "simclr", measures)       # budgets averaged per (ratio, seed)
            for r in table[table["ratio"] == "all"].to_dict("records"):
                row[f"{measures[r['measure']]} - SimCLR"] = fmt_ci(r["difference"], r["ci low"], r["ci high"])
        rows.append(row)
    return pd.DataFrame(rows)


def report_section(df: pd.DataFrame, num_classes: int, markdown_table) -> list[str]:
    """The report's answer to the second question; nothing without pkcl and SimCLR trials."""
    encoders = set(df[ENCODER])
    clusters = df[df["loss.name"] == "pkcl"].groupby(ENCODER)["loss.clusters"].first()
    pkcls = list(clusters.index)
    if not pkcls or "simclr" not in encoders:
        return []
    trials, budgets = per_trial(df), per_budget(df, num_classes)
    parts = ["### Without labels: does pseudo-label KCL (pkcl) balance the space?",
             "pkcl draws KCL's extra positives from clusters of its own features (M clusters, the "
             "number of classes unknown to it); SimCLR is the label-free baseline and KCL the "
             "label-using target. Paired by imbalance ratio and seed; 95% t intervals; a difference "
             f"is claimed only where the interval excludes 0. Selections: budgets B <= {num_classes} "
             "(the classes), averaged over the strategies that read the features (not `random`)."]
    for enc in pkcls:
        features = paired(trials, enc, "simclr", FEATURE_MEASURES)
        chosen = paired(budgets, enc, "simclr", SELECTION_MEASURES, by=("budget",))
        parts += [f"#### {enc} minus SimCLR: the feature space (balanced probe)",
                  markdown_table(_formatted(features, FEATURE_MEASURES)), _claims(features, FEATURE_MEASURES),
                  f"#### {enc} minus SimCLR: the selected sets",
                  markdown_table(_formatted(chosen, SELECTION_MEASURES)), _claims(chosen, SELECTION_MEASURES)]
    parts += ["#### How much of KCL's lead over SimCLR does pkcl close?",
              "(pkcl - SimCLR) / (KCL - SimCLR) of the means over the units all three ran, with a "
              "bootstrap 95% interval over those units (for CV, lower is better on both sides).",
              markdown_table(_gap_table(trials, budgets, pkcls)),
              f"#### The number of clusters against the true number of classes (C = {num_classes})",
              markdown_table(_m_table(trials, budgets, clusters, num_classes))]
    return parts
