"""The selection study's analysis: balance of the selected sets and downstream
accuracy against the budget, per strategy and encoder, and the report's answers
to its three questions, each with a 95% confidence interval (t distribution).

Rows come from results/selection/*.parquet (one per trial x strategy x budget),
joined with the trial's own row (encoder loss, imbalance ratio, seed, and the
encoder's balancedness under the long-tailed probe).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.markdown import escape
from analysis.results import load_results, load_selection_rows
from analysis.tables import ols_slope, t_quantile
from trainables import names

LT_TOP1, LT_BALANCE = names.sweep_objectives(names.LT, "multi")
ENCODER = "encoder"         # the loss, and for pkcl its number of clusters: "pkcl M=10"
TRIAL_COLUMNS = ["trial_id", names.STATUS, "loss.name", "loss.clusters", "data.imbalance_ratio", "seed", LT_TOP1,
                 LT_BALANCE, *(names.probe_metric(names.BALANCED, m)
                               for m in (names.TOP1, names.BALANCEDNESS, names.PER_CLASS))]
METRICS = [names.CLASSES_COVERED, names.ENTROPY, names.IMBALANCE, names.TOP1, names.BALANCEDNESS]


def has_selection(path: str | Path) -> bool:
    path = Path(path)
    return any((p / "selection").is_dir() for p in (path / "results", path))


def load_selection(paths) -> pd.DataFrame:
    """Every selection row of one or several sweeps' search trials (a confirmation re-runs a
    chosen configuration: study.confirm), with its trial's columns."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    rows = load_selection_rows(paths)
    if rows.empty:
        raise FileNotFoundError(f"no selection results under {', '.join(map(str, paths))}")
    trials = load_results(paths, columns=[*TRIAL_COLUMNS, names.CONFIRM_COLUMN])
    searched = trials[(trials[names.STATUS] == "ok") & trials[names.CONFIRM_COLUMN].isna()]
    searched = searched.assign(**{ENCODER: [encoder_name(loss, m) for loss, m in
                                            zip(searched["loss.name"], searched["loss.clusters"])]})
    return rows.merge(searched.drop(columns=[names.CONFIRM_COLUMN]), on="trial_id")


def encoder_name(loss: str, clusters) -> str:
    """The encoder's label in the selection tables: the loss, with M for pkcl."""
    return f"{loss} M={int(clusters)}" if loss == "pkcl" and pd.notna(clusters) else loss


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its t interval; NaN bounds below 2 values."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan
    half = t_quantile(0.5 + level / 2, len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - half, m + half


def fmt_ci(m: float, lo: float, hi: float, digits: int = 3) -> str:
    """'mean [low, high]', or the mean alone where there is no interval (NaN bounds)."""
    return f"{m:.{digits}f}" if math.isnan(lo) else f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def budget_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per encoder, strategy and budget: trials and the mean [95% CI] of each measure."""
    out = []
    for (loss, strategy, budget), g in df.groupby([ENCODER, "strategy", "budget"]):
        row = {"encoder": loss, "strategy": strategy, "budget": budget, "n": len(g)}
        for m in (names.CLASSES_COVERED, names.ENTROPY, names.TOP1, names.BALANCEDNESS):
            row[m] = fmt_ci(*mean_ci(g[m]), digits=2 if m == names.CLASSES_COVERED else 3)
        row["imbalance (median)"] = f"{g[names.IMBALANCE].median():.1f}"
        out.append(row)
    return pd.DataFrame(out)


def imbalance_slopes(df: pd.DataFrame, encoder: str = "simclr", measure: str = names.ENTROPY) -> pd.DataFrame:
    """Q1: per strategy and budget, the slope of `measure` against log10(pool imbalance)
    for one encoder, with a 95% CI; an interval containing 0 is consistent with
    selection that does not depend on the pool's imbalance."""
    out = []
    for (strategy, budget), g in df[df[ENCODER] == encoder].groupby(["strategy", "budget"]):
        x = np.log10(g["data.imbalance_ratio"].to_numpy(dtype=float))
        y = g[measure].to_numpy(dtype=float)
        if len(x) < 3 or np.ptp(x) == 0:
            continue
        slope, se = ols_slope(x, y)
        half = t_quantile(0.975, len(x) - 2) * se
        out.append({"strategy": strategy, "budget": budget, "n": len(x), "slope": slope,
                    "ci low": slope - half, "ci high": slope + half})
    return pd.DataFrame(out)


def paired_difference(df: pd.DataFrame, a: str, b: str, measure: str) -> pd.DataFrame:
    """Q2: per strategy, mean of measure(encoder a) - measure(encoder b) over pairs
    with the same imbalance ratio, seed and budget, with a 95% CI."""
    keys = ["strategy", "data.imbalance_ratio", "seed", "budget"]
    wide = df[df[ENCODER].isin([a, b])].pivot_table(index=keys, columns=ENCODER, values=measure)
    if a not in wide or b not in wide:
        return pd.DataFrame(columns=["strategy", "pairs", "difference", "ci low", "ci high"])
    diff = (wide[a] - wide[b]).dropna().rename("d").reset_index()
    out = []
    for strategy, g in diff.groupby("strategy"):
        m, lo, hi = mean_ci(g["d"])
        out.append({"strategy": strategy, "pairs": len(g), "difference": m, "ci low": lo, "ci high": hi})
    return pd.DataFrame(out)


def small_budget(df: pd.DataFrame, num_classes: int) -> pd.DataFrame:
    """Q3: at the budgets no larger than the number of classes, per encoder and
    strategy: classes covered (as a fraction of the classes) and entropy, with CIs,
    and the paired gain over `random` in classes covered."""
    small = df[df["budget"] <= num_classes]
    out = []
    keys = [ENCODER, "data.imbalance_ratio", "seed", "budget"]
    random = small[small["strategy"] == "random"].set_index(keys)[names.CLASSES_COVERED]
    for (loss, strategy), g in small.groupby([ENCODER, "strategy"]):
        gain = (g.set_index(keys)[names.CLASSES_COVERED] - random).dropna()
        out.append({"encoder": loss, "strategy": strategy, "n": len(g),
                    "covered fraction": fmt_ci(*mean_ci(g[names.CLASSES_COVERED] / num_classes)),
                    names.ENTROPY: fmt_ci(*mean_ci(g[names.ENTROPY])),
                    "classes over random": fmt_ci(*mean_ci(gain), digits=2)})
    return pd.DataFrame(out)


def figure(df: pd.DataFrame, out: Path, measure: str, label: str) -> Path:
    """`measure` against the budget, one panel per encoder, a line per strategy
    (mean over imbalance levels and seeds, 95% CI as error bars)."""
    from analysis.figures import plt, save_figure
    encoders = sorted(df[ENCODER].unique())
    fig, axes = plt.subplots(1, len(encoders), figsize=(4.2 * len(encoders), 3.4), sharey=True, squeeze=False)
    for ax, loss in zip(axes[0], encoders):
        for strategy, g in df[df[ENCODER] == loss].groupby("strategy"):
            stats = [(b, *mean_ci(gb[measure])) for b, gb in g.groupby("budget")]
            b, m, lo, hi = (np.array(v, dtype=float) for v in zip(*stats))
            err = np.nan_to_num(np.vstack([m - lo, hi - m]))
            ax.errorbar(b, m, yerr=err, marker="o", capsize=3, label=strategy)
        ax.set_xscale("log")
        ax.set_title(f"encoder: {loss}")
        ax.set_xlabel("budget (images labeled, log scale)")
    axes[0][0].set_ylabel(label)
    axes[0][-1].legend(fontsize=8)
    return save_figure(fig, out / f"selection_{measure}.png")


def _cells(table: pd.DataFrame) -> tuple[int, int, int]:
    """(below 0, above 0, containing 0) among a table's confidence intervals."""
    return (int((table["ci high"] < 0).sum()), int((table["ci low"] > 0).sum()),
            int(((table["ci low"] <= 0) & (table["ci high"] >= 0)).sum()))


def report_sections(df: pd.DataFrame, out: Path, num_classes: int, markdown_table) -> list[str]:
    """The selection part of report.md: tables, figures and the three answers."""
    made = [figure(df, out, names.ENTROPY, "label entropy of the selected set (1 = balanced)"),
            figure(df, out, names.TOP1, "balanced-test top-1 of a probe on the selection")]
    parts = ["## Selection study: which images to label",
             "Each trial trains an encoder on the long-tailed pool, then every strategy selects each "
             "budget of images from that pool without labels or the number of classes; the labels are "
             "revealed only to measure the selection (classes covered, max/min count over covered "
             "classes, label entropy normalised by log C) and to train a linear probe on the selected "
             "images alone, scored on the balanced test set (top-1, p(V)). Means over imbalance levels "
             "and seeds, with 95% confidence intervals in brackets.",
             markdown_table(budget_table(df)), *[f"![{p.stem}]({p.name})" for p in made]]
    parts += _q1(df, markdown_table) + _q2(df, markdown_table) + _q3(df, num_classes, markdown_table)
    parts += ["### The same on CIFAR-10-LT",
              "`python -m study.sweep select --dataset cifar10 --data-root DIR --imbalance-levels 1,10,100` "
              "(on a GPU the ResNet-18 preset applies; add `--set select.budgets=10,20,50,100,200` for "
              "larger budgets), then `python -m analysis.report runs/NAME`."]
    return parts


def _q1(df, markdown_table) -> list[str]:
    encoder = "simclr" if "simclr" in set(df[ENCODER]) else sorted(df[ENCODER].unique())[0]
    parts = [f"### Q1: does selection in {escape(encoder)} features depend on the pool's imbalance?"]
    for measure in (names.ENTROPY, names.TOP1):
        slopes = imbalance_slopes(df, encoder, measure)
        if slopes.empty:
            parts.append(f"Too few imbalance levels for a slope of {measure} (need >= 2 levels, 3 trials).")
            continue
        down, up, flat = _cells(slopes)
        parts.append(f"Slope of {measure} against log10(imbalance ratio), per strategy and budget: "
                     f"**{down} of {len(slopes)}** intervals lie below 0 (the selection gets worse as the "
                     f"pool gets more imbalanced), {up} above 0, {flat} contain 0.")
        parts.append(markdown_table(slopes))
    return parts


def _q2(df, markdown_table) -> list[str]:
    parts = ["### Q2: does a balanced and discriminative space (KCL) select better?"]
    encoders = set(df[ENCODER])
    for other in ("simclr", "ce"):
        if "kcl" not in encoders or other not in encoders:
            continue
        for measure in (names.TOP1, names.ENTROPY):
            d = paired_difference(df, "kcl", other, measure)
            better, worse, tied = _cells(d)[1], _cells(d)[0], _cells(d)[2]
            parts.append(f"KCL minus {other}, {measure} (pairs with the same imbalance, seed and budget): "
                         f"KCL is **higher for {better} of {len(d)}** strategies, lower for {worse}, "
                         f"indistinguishable for {tied}.")
            parts.append(markdown_table(d))
    if "kcl" in encoders:
        enc = df.drop_duplicates("trial_id").groupby(ENCODER)[[LT_BALANCE, LT_TOP1]].mean()
        parts.append("The encoders' own balancedness and top-1 (long-tailed probe, mean over trials): "
                     + ", ".join(f"{loss} p(V) {r[LT_BALANCE]:.3f}, top-1 {r[LT_TOP1]:.3f}"
                                 for loss, r in enc.rename(index=escape).iterrows()) + ".")
    return parts


def _q3(df, num_classes: int, markdown_table) -> list[str]:
    table = small_budget(df, num_classes)
    parts = [f"### Q3: budgets too small to cover every class evenly (B <= {num_classes} classes)"]
    if table.empty:
        return [*parts, "No budget this small in these results."]
    parts.append("Fraction of the classes covered, label entropy, and classes covered beyond `random` "
                 "on the same pool (paired):")
    parts.append(markdown_table(table))
    return parts
