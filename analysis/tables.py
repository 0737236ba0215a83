"""The numbers of the report, computed from the results frame (one row per trial).

Balancedness is never shown alone: every table with p(V) has top-1 beside it and
the coefficient of variation (CV) of the class accuracies, a scale-free spread
that tells "balanced because good" (high top-1, low CV) from "balanced because
uniformly bad" (low top-1: p(V) near 1 whatever the CV, since the gaps are small
in absolute terms).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.frontier import fronts_by, hypervolume
from trainables import names

KNOBS = ("loss.k", "loss.temperature", "loss.clusters", "optim.lr", "optim.weight_decay", "seed")


def balancedness(per_class_acc, sigma: float = 0.1) -> float:
    """p(V) = 1/C^2 * sum_{i,j} exp(-(a_i - a_j)^2 / sigma), in numpy: the same formula as
    trainables.metrics.balancedness (a test checks they agree), without importing torch.

    per_class_acc: C accuracies as fractions; sigma > 0."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    a = np.asarray(per_class_acc, dtype=np.float64)
    if a.size == 0:
        raise ValueError("balancedness needs at least one class accuracy")
    return float(np.exp(-np.square(a[:, None] - a[None, :]) / sigma).mean())


def ok_trials(df: pd.DataFrame) -> pd.DataFrame:
    return df[df[names.STATUS] == "ok"].copy()


def add_derived(df: pd.DataFrame, probes=(names.LT, names.BALANCED), sigmas=()) -> pd.DataFrame:
    """Add per probe: "<probe>/acc_cv" (std / mean of the class accuracies) and
    "<probe>/balancedness@<sigma>" recomputed from the stored per-class accuracies.

    A list dataset takes its imbalance from its list (data.imbalance_ratio is null
    in its rows): there the level is the realized max / min of its class counts.
    """
    out = df.copy()
    realized = [max(c) / min(c) if c is not None and len(c) and min(c) > 0 else np.nan
                for c in out["class_counts"]]
    out["data.imbalance_ratio"] = out["data.imbalance_ratio"].fillna(pd.Series(realized, index=out.index))
    for probe in probes:
        accs = out[names.probe_metric(probe, names.PER_CLASS)]
        out[names.probe_metric(probe, names.ACC_CV)] = [np.std(a) / np.mean(a) if np.mean(a) > 0 else math.nan
                                                    for a in accs]
        for sigma in sigmas:
            out[names.balancedness_at(probe, sigma)] = [balancedness(a, sigma) for a in accs]
    return out


def level_table(df: pd.DataFrame, probe: str = names.LT) -> pd.DataFrame:
    """Per loss and imbalance level: trials, mean and std of top-1, mean many / medium /
    few, mean p(V) and mean CV of the class accuracies."""
    def mean(metric):
        return grouped[names.probe_metric(probe, metric)].mean()
    grouped = df.groupby(["loss.name", "data.imbalance_ratio"])
    table = pd.DataFrame({
        "trials": grouped.size(),
        names.TOP1: mean(names.TOP1), "top1 std": grouped[names.probe_metric(probe, names.TOP1)].std(ddof=1),
        names.MANY: mean(names.MANY), names.MEDIUM: mean(names.MEDIUM), names.FEW: mean(names.FEW),
        "p(V)": mean(names.BALANCEDNESS), "CV": mean(names.ACC_CV),
    })
    return table.reset_index().rename(columns={"loss.name": "loss", "data.imbalance_ratio": "ratio"})


def hypervolume_table(df: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """Per loss and imbalance level: the trials and the hypervolume of their front of
    `objectives` above the reference point 0 (analysis.frontier.hypervolume)."""
    rows = [{"loss": loss, "ratio": ratio, "trials": len(group), "hypervolume": hypervolume(group, objectives)}
            for (loss, ratio), group in df.groupby(["loss.name", "data.imbalance_ratio"], dropna=False)]
    return pd.DataFrame(rows, columns=["loss", "ratio", "trials", "hypervolume"])


def frontier_members(df: pd.DataFrame, objectives: list[str], per_level: bool = True) -> pd.DataFrame:
    """The trials on their loss's (and level's) Pareto front of `objectives`, with the
    knobs that vary across `df`, the CV and the trial id; best first.

    per_level=False (a searched ratio, --imbalance-range, differs in every trial):
    one front per loss over all its trials.
    """
    by = ["loss.name", "data.imbalance_ratio"] if per_level else ["loss.name"]
    front = df[fronts_by(df, objectives, by)]
    knobs = [k for k in KNOBS if df[k].nunique() > 1]
    probe = names.probe_of(objectives[0])         # None for the select study's objectives
    shown = [names.probe_metric(probe, m) for m in (names.TOP1, names.BALANCEDNESS, names.FEW, names.ACC_CV)] if probe else []
    extra = [c for c in shown if c in df and c not in objectives]
    columns = ["loss.name", "data.imbalance_ratio", *knobs, *objectives, *extra, "trial_id"]
    return front[columns].sort_values(["loss.name", "data.imbalance_ratio", objectives[0]],
                                      ascending=[True, True, False])


def t_quantile(q: float, dof: float) -> float:
    """Quantile q of Student's t with `dof` degrees of freedom (scipy.special, not
    scipy.stats: the latter takes a second to import, once per sweep report)."""
    from scipy.special import stdtrit
    return float(stdtrit(dof, q))


def ols_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y on x and its standard error:
    b = sum(dx dy) / sum(dx^2), se = sqrt(sum(r^2) / (n - 2) / sum(dx^2))."""
    dx, dy = x - x.mean(), y - y.mean()
    sxx = float(dx @ dx)
    slope = float(dx @ dy) / sxx
    residuals = dy - slope * dx
    return slope, math.sqrt(float(residuals @ residuals) / (len(x) - 2) / sxx)


def slope_table(df: pd.DataFrame, probe: str = names.LT, level: float = 0.95) -> pd.DataFrame:
    """Per loss, the least-squares slope of p(V) against log10(imbalance ratio), with a
    `level` confidence interval (t distribution, n - 2 degrees of freedom).

    A slope whose interval contains 0 is consistent with balancedness that does not
    depend on the imbalance (the paper's claim for contrastive losses).
    """
    rows = []
    for loss, group in df.groupby("loss.name"):
        x = np.log10(group["data.imbalance_ratio"].to_numpy(dtype=float))
        y = group[names.probe_metric(probe, names.BALANCEDNESS)].to_numpy(dtype=float)
        n = len(x)
        if n < 3 or np.ptp(x) == 0:
            rows.append({"loss": loss, "trials": n, "slope": math.nan, "ci low": math.nan,
                         "ci high": math.nan})
            continue
        slope, stderr = ols_slope(x, y)
        half = t_quantile(0.5 + level / 2, n - 2) * stderr
        rows.append({"loss": loss, "trials": n, "slope": slope, "ci low": slope - half,
                     "ci high": slope + half})
    return pd.DataFrame(rows)


def sigma_ranking(df: pd.DataFrame, sigmas, probe: str = names.LT) -> tuple[pd.DataFrame, bool]:
    """Losses ranked by mean p(V) at each sigma, per imbalance level.

    Returns the table (one row per level and sigma: the losses best first) and
    whether any level's ranking differs between sigmas.
    """
    rows, changed = [], False
    for ratio, group in df.groupby("data.imbalance_ratio"):
        rankings = []
        for sigma in sigmas:
            means = group.groupby("loss.name")[names.balancedness_at(probe, sigma)].mean()
            ranking = " > ".join(means.sort_values(ascending=False, kind="stable").index)
            rankings.append(ranking)
            rows.append({"ratio": ratio, "sigma": sigma, "ranking by p(V)": ranking})
        changed |= len(set(rankings)) > 1
    return pd.DataFrame(rows), changed
