"""Loss comparisons paired by seed, and the sentences that may claim a difference.

At each imbalance level, for each pair of losses (a, b) and each of top-1 and p(V),
the trials of the two losses with the same seed form a pair (same long-tailed draw,
same initialisation seed), and the report shows

    d_s = metric(a, seed s) - metric(b, seed s),   mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n)

over the n paired seeds. A sentence claims "a is more balanced than b at ratio R"
only when that 95% interval excludes 0; otherwise it says "no difference detected at
n = ...". Pairing removes the variance the two losses share through the draw, so
it needs fewer seeds than comparing two unpaired means.

Only levels where every loss has at most one trial per seed are compared (a grid
such as fig2); a searched study's trials differ in their knobs, not only in the loss.
"""

from __future__ import annotations

import itertools
import math

import pandas as pd

from analysis.selection import encoder_name, mean_ci
from trainables import names

NAMES = {"ce": "CE", "simclr": "SimCLR", "supcon": "SupCon", "kcl": "KCL", "pkcl": "pkcl"}
WORDS = {names.TOP1: ("more accurate", "less accurate", "top-1"),
         names.BALANCEDNESS: ("more balanced", "less balanced", "p(V)")}
COLUMNS = ["ratio", "a", "b", "metric", "pairs", "difference", "ci low", "ci high"]


def paired_by_seed(ok: pd.DataFrame, probe: str = names.LT) -> pd.DataFrame:
    """One row per level, pair of losses (a before b by name) and metric: the pairs, the
    mean difference a - b and its 95% interval (NaN bounds with a single pair)."""
    rows = []
    if "loss.clusters" in ok:                         # pkcl at several M: one encoder each
        labels = [encoder_name(loss, m) for loss, m in zip(ok["loss.name"], ok["loss.clusters"])]
        ok = ok.assign(**{"loss.name": labels})
    for ratio, level in ok.groupby("data.imbalance_ratio"):
        if level.groupby(["loss.name", "seed"]).size().max() > 1:
            continue                                  # not one trial per loss and seed
        for a, b in itertools.combinations(sorted(level["loss.name"].unique()), 2):
            for metric in WORDS:
                wide = level.pivot(index="seed", columns="loss.name", values=names.probe_metric(probe, metric))
                d = (wide[a] - wide[b]).dropna()
                if len(d):
                    rows.append(dict(zip(COLUMNS, [ratio, a, b, metric, len(d), *mean_ci(d)])))
    return pd.DataFrame(rows, columns=COLUMNS)


def claim(row) -> str:
    """The sentence a comparison allows: a difference only where its interval excludes 0."""
    more, less, label = WORDS[row["metric"]]
    a, b = NAMES.get(row["a"], row["a"]), NAMES.get(row["b"], row["b"])
    n, m, lo, hi = int(row["pairs"]), row["difference"], row["ci low"], row["ci high"]
    where = f"at ratio {row['ratio']:g}"
    if math.isnan(lo):
        return f"{a} and {b} {where}, {label}: one paired seed, no interval ({label} difference {m:+.3f})"
    numbers = f"{label} {m:+.3f} [{lo:+.3f}, {hi:+.3f}], n = {n} paired seeds"
    if lo > 0 or hi < 0:
        return f"{a} is {more if lo > 0 else less} than {b} {where} ({numbers})"
    return f"{a} and {b} {where}, {label}: no difference detected at n = {n} ({numbers})"


def report_section(ok: pd.DataFrame, probe: str, markdown_table) -> list[str]:
    """The report's paired comparisons: the table and the sentences; nothing without pairs."""
    table = paired_by_seed(ok, probe)
    if table.empty:
        return []
    return ["## Loss comparisons, paired by seed",
            "At each level, each pair of losses is compared on the seeds both ran (the same draw and "
            "initialisation seed): the mean difference a - b over the seeds and its 95% t interval. A "
            "difference is claimed only where the interval excludes 0.",
            markdown_table(table.assign(metric=[WORDS[m][2] for m in table["metric"]])),
            "\n".join(f"- {claim(row)}" for row in table.to_dict("records"))]
