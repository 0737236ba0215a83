"""The report's figures (PNG; matplotlib's non-interactive Agg backend).

Every function takes the results frame (ok trials, derived columns added) and an
output folder, writes one PNG and returns its path, or None when the results hold
nothing to draw (no KCL trial for the knob figure, say). A loss keeps one colour
in every figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.frontier import pareto_front  # noqa: E402
from trainables import names  # noqa: E402

LOSS_COLOURS = {"ce": "tab:blue", "simclr": "tab:orange", "supcon": "tab:green", "kcl": "tab:red"}
PROBE_NAMES = {names.LT: "long-tailed probe", names.BALANCED: "balanced probe"}
RATIO_LABEL = "imbalance ratio (largest / smallest class, log scale)"


# Beyond these, matplotlib's drawing, not the data, sets the report's time: 10,000 trials of
# 100 classes made a million dots and a "best" legend placement that tests each one.
MAX_DOTS, BEST_LEGEND_POINTS = 20_000, 2_000


def _legend_loc(points: int) -> str:
    return "best" if points <= BEST_LEGEND_POINTS else "lower right"


def _thin(n: int, limit: int = MAX_DOTS) -> np.ndarray:
    """Indices of at most `limit` of n dots, a fixed random draw (the means use every one)."""
    return np.arange(n) if n <= limit else np.sort(np.random.default_rng(0).choice(n, limit, replace=False))


def _colour(loss: str) -> str:
    return LOSS_COLOURS.get(loss, "tab:gray")


def save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure2(df: pd.DataFrame, out: Path, sigma: float) -> Path:
    """Kang et al.'s Figure 2: top-1 (left) and p(V) (right) against the imbalance ratio,
    one line per loss, mean and a +-1 std band over trials (seeds) per level;
    top row the long-tailed probe, bottom row the balanced probe."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for row, probe in enumerate((names.LT, names.BALANCED)):
        for col, (metric, label) in enumerate(((names.TOP1, "top-1 accuracy (fraction)"),
                                               (names.BALANCEDNESS, f"balancedness p(V), sigma={sigma:g}"))):
            ax = axes[row, col]
            for loss, group in df.groupby("loss.name"):
                stats = group.groupby("data.imbalance_ratio")[names.probe_metric(probe, metric)].agg(["mean", "std"])
                x, mean, std = stats.index.to_numpy(), stats["mean"].to_numpy(), stats["std"].fillna(0).to_numpy()
                ax.plot(x, mean, "o-", color=_colour(loss), label=loss)
                ax.fill_between(x, mean - std, mean + std, color=_colour(loss), alpha=0.2)
            ax.set_xscale("log")
            ax.set_title(f"{label.split(' (')[0].split(',')[0]}: {PROBE_NAMES[probe]}")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel(RATIO_LABEL)
    axes[0, 0].legend(title="loss")
    fig.suptitle("Accuracy and balancedness against imbalance (mean, band = +-1 std over trials)")
    return save_figure(fig, out / "figure2.png")


def tradeoff(df: pd.DataFrame, out: Path, probe: str, sigma: float) -> Path:
    """Top-1 against p(V), every trial a point, each loss's Pareto front a step line;
    one panel per imbalance level."""
    levels = sorted(df["data.imbalance_ratio"].unique())
    fig, axes = plt.subplots(1, len(levels), figsize=(4.5 * len(levels), 4.2), squeeze=False)
    cols = names.sweep_objectives(probe, "multi")          # top-1, p(V)
    for ax, ratio in zip(axes[0], levels):
        level = df[df["data.imbalance_ratio"] == ratio]
        for loss, group in level.groupby("loss.name"):
            ax.scatter(group[cols[0]], group[cols[1]], color=_colour(loss), alpha=0.6, label=loss)
            front = group[pareto_front(group, cols)].sort_values(cols[0])
            ax.step(front[cols[0]], front[cols[1]], where="post", color=_colour(loss), lw=1.5)
        ax.set_title(f"imbalance ratio {ratio:g}")
        ax.set_xlabel(f"top-1 accuracy (fraction), {PROBE_NAMES[probe]}")
        ax.set_ylabel(f"balancedness p(V), sigma={sigma:g}")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(title="loss (line: Pareto front)", loc=_legend_loc(len(df)))
    fig.suptitle("Accuracy-balancedness trade-off per imbalance level")
    return save_figure(fig, out / "tradeoff.png")


def kcl_knobs(df: pd.DataFrame, out: Path, probe: str, sigma: float) -> Path | None:
    """How k and the temperature move KCL's top-1 and p(V); colour = imbalance ratio."""
    kcl = df[df["loss.name"] == "kcl"]
    if kcl.empty:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    ratios = np.log10(kcl["data.imbalance_ratio"].to_numpy(dtype=float))
    for col, (knob, label) in enumerate((("loss.k", "k (positives per anchor, log scale)"),
                                         ("loss.temperature", "temperature (log scale)"))):
        for row, (metric, ylabel) in enumerate(((names.TOP1, "top-1 accuracy (fraction)"),
                                                (names.BALANCEDNESS, f"balancedness p(V), sigma={sigma:g}"))):
            ax = axes[row, col]
            points = ax.scatter(kcl[knob], kcl[names.probe_metric(probe, metric)], c=ratios, cmap="viridis")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())   # crowded otherwise
            ax.set_xlabel(label)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    fig.colorbar(points, ax=axes, label="log10 imbalance ratio")
    fig.suptitle(f"KCL's knobs ({PROBE_NAMES[probe]})")
    fig.savefig(out / "kcl_knobs.png", dpi=110)
    plt.close(fig)
    return out / "kcl_knobs.png"


def head_tail(df: pd.DataFrame, out: Path, probe: str) -> Path:
    """Per-class test accuracy against the class's train count, every class of every
    trial a dot, one series per loss with its mean over log-spaced count bins."""
    fig, ax = plt.subplots(figsize=(7, 5))
    counts_all = np.concatenate([np.asarray(c) for c in df["class_counts"]])
    bins = np.geomspace(max(counts_all.min(), 1), counts_all.max() * 1.001, 8)
    for loss, group in df.groupby("loss.name"):
        counts = np.concatenate([np.asarray(c) for c in group["class_counts"]])
        accs = np.concatenate([np.asarray(a) for a in group[names.probe_metric(probe, names.PER_CLASS)]])
        dots = _thin(len(counts))
        ax.scatter(counts[dots], accs[dots], s=8, alpha=0.25, color=_colour(loss))
        which = np.digitize(counts, bins)
        centres = [np.sqrt(bins[i - 1] * bins[i]) for i in range(1, len(bins)) if (which == i).any()]
        means = [accs[which == i].mean() for i in range(1, len(bins)) if (which == i).any()]
        ax.plot(centres, means, "o-", color=_colour(loss), label=loss)
    ax.set_xscale("log")
    ax.set_xlabel("train images of the class (log scale)")
    ax.set_ylabel(f"test accuracy of the class (fraction), {PROBE_NAMES[probe]}")
    ax.set_title("Head and tail: class accuracy against class frequency")
    ax.grid(alpha=0.3)
    ax.legend(title="loss (line: binned mean)", loc=_legend_loc(len(counts_all)))
    return save_figure(fig, out / "head_tail.png")


def importance_figure(table: pd.DataFrame, out: Path) -> Path:
    """Each knob's importance (analysis.importance), one panel per objective, one bar per
    (loss, level) in each knob's group."""
    objectives = list(dict.fromkeys(table["objective"]))
    fig, axes = plt.subplots(1, len(objectives), figsize=(5 * len(objectives), 4), squeeze=False, sharey=True)
    for ax, objective in zip(axes[0], objectives):
        wide = table[table["objective"] == objective].pivot_table(index="knob", columns=["loss", "ratio"],
                                                                  values="importance")
        width = 0.8 / max(len(wide.columns), 1)
        for i, (loss, ratio) in enumerate(wide.columns):
            ax.bar(np.arange(len(wide)) + i * width, wide[(loss, ratio)], width, label=f"{loss}, ratio {ratio}")
        ax.set_xticks(np.arange(len(wide)) + 0.4 - width / 2, wide.index)
        ax.set_title(objective)
        ax.set_ylabel("fANOVA importance (share of variance)")
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(title="loss, level")
    fig.suptitle("Which searched knob mattered")
    return save_figure(fig, out / "importance.png")


def learning_curves(results: list[dict], path) -> Path:
    """Validation kNN accuracy against the epoch, one line per long trial (its loss), each
    with its plateau (analysis.convergence) dashed."""
    from analysis.convergence import plateau_of
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for result in results:
        loss = result["config"]["loss.name"]
        curve = [e[names.KNN_ACC] for e in result["history"]]
        ax.plot(range(1, len(curve) + 1), curve, color=_colour(loss), label=loss)
        ax.axhline(plateau_of(curve), color=_colour(loss), linestyle="--", linewidth=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation kNN accuracy (fraction)")
    ax.set_title("Learning curves (dashed: the plateau, mean of the last 10% of epochs)")
    ax.grid(alpha=0.3)
    ax.legend(title="loss")
    return save_figure(fig, Path(path))
