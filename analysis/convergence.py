"""How far from converged an encoder is: its last epoch's validation kNN accuracy as a
fraction of the plateau its loss reaches on that dataset and architecture when trained
long enough, at the measured imbalance nearest the trial's.

    plateau(curve)       mean validation kNN accuracy over the last TAIL of a long run's epochs
    convergence(trial)   knn_acc(trial's last epoch) / plateau(loss, dataset, arch, ratio')

ratio' is the imbalance ratio among the measured ones nearest the trial's on a log scale
(the same one where it was measured): a more imbalanced train set leaves fewer tail
images in the kNN monitor's bank, so its plateau is lower, and a ratio-10 plateau would
make a converged ratio-100 encoder look unconverged.

The plateaus are measured once, from long single trials (`python -m analysis.convergence
CURVE.json ...` reads the JSON results of `python -m trainables.trial ... --output
CURVE.json` and prints the rows of PLATEAUS), and kept in PLATEAUS below with the
command and commit that measured them. A trial whose (loss, dataset, arch) has no
measured plateau gets NaN, never a guess.

    python -m analysis.convergence curves/ce.json curves/kcl.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from trainables import names

TAIL = 0.1                 # the plateau: the mean over the last 10% of a long run's epochs
TRIALS_SHOWN = 100         # the report's per-trial table: at most this many rows


@dataclass(frozen=True)
class Plateau:
    knn_acc: float         # validation kNN accuracy at the plateau
    epochs: int            # the long run's length
    to_90: int | None      # the first epoch at which the run reached 90% of it
    command: str           # how it was measured (a trainables.trial command) and at which commit
    ratio: float = 10.0    # the imbalance ratio of the long run


# (loss, dataset, arch) -> its Plateaus, one per measured imbalance ratio; measured (docs/results.md,
# "Learning curves") one trial each, 200 epochs (cosine schedule), 2,000 images, seed 0: at ratio 10
# (commit 9c05900), and for CE and KCL at ratio 100 (commit 5c9d5b5).
_LONG = "python -m trainables.trial --loss {} --imbalance-ratio 10 --total 2000 --epochs 200 (commit 9c05900)"
_LONG100 = "python -m trainables.trial --loss {} --imbalance-ratio 100 --total 2000 --epochs 200 (commit 5c9d5b5)"
PLATEAUS: dict[tuple[str, str, str], tuple[Plateau, ...]] = {
    ("ce", "shapes", "cnn"): (Plateau(knn_acc=0.9509, epochs=200, to_90=31, command=_LONG.format("ce")),
                              Plateau(knn_acc=0.804, epochs=200, to_90=57, command=_LONG100.format("ce"), ratio=100.0)),
    # still rising by about 0.004 per 20 epochs at the end: a lower bound of SimCLR's plateau
    ("simclr", "shapes", "cnn"): (Plateau(knn_acc=0.4698, epochs=200, to_90=79, command=_LONG.format("simclr")),),
    ("kcl", "shapes", "cnn"): (Plateau(knn_acc=0.9371, epochs=200, to_90=42, command=_LONG.format("kcl")),
                               Plateau(knn_acc=0.7198, epochs=200, to_90=71, command=_LONG100.format("kcl"),
                                       ratio=100.0)),
}


def reference(plateaus: tuple[Plateau, ...] | None, ratio: float) -> Plateau | None:
    """The plateau measured at the ratio nearest `ratio` (log scale; the lower on a tie)."""
    if not plateaus:
        return None
    return min(plateaus, key=lambda p: (abs(math.log(p.ratio) - math.log(ratio)), p.ratio))


def plateau_of(curve: Sequence[float], tail: float = TAIL) -> float:
    """The mean of the last ceil(tail * n) values of a per-epoch curve [n]."""
    values = [float(v) for v in curve]
    last = values[-max(1, math.ceil(tail * len(values))):]
    return sum(last) / len(last)


def epochs_to(curve: Sequence[float], fraction: float, plateau: float) -> int | None:
    """The first epoch (1-based) whose value reaches fraction * plateau; None if none does."""
    return next((e for e, v in enumerate(curve, start=1) if v >= fraction * plateau), None)


def convergence_table(rows: pd.DataFrame, history: pd.DataFrame, plateaus=None) -> pd.DataFrame:
    """Per trial (rows: trial_id, loss.name, data.dataset, model.arch, data.imbalance_ratio):
    its last epoch's kNN accuracy, the reference plateau and their ratio (NaN without one)."""
    plateaus = PLATEAUS if plateaus is None else plateaus
    if history.empty:
        return pd.DataFrame()
    last = history.sort_values(names.EPOCH).groupby("trial_id")[[names.EPOCH, names.KNN_ACC]].last()
    out = rows.merge(last, left_on="trial_id", right_index=True)
    chosen = [reference(plateaus.get((r["loss.name"], r["data.dataset"], r["model.arch"])),
                        r["data.imbalance_ratio"]) for r in out.to_dict("records")]
    out["plateau"] = [p.knn_acc if p else math.nan for p in chosen]
    out["plateau ratio"] = [p.ratio if p else math.nan for p in chosen]
    out["convergence"] = out[names.KNN_ACC] / out["plateau"]
    return out[["trial_id", "loss.name", "data.imbalance_ratio", names.EPOCH, names.KNN_ACC, "plateau",
                "plateau ratio", "convergence"]]


def measure(result: dict) -> tuple[tuple[str, str, str], Plateau]:
    """A long trial's JSON result -> its PLATEAUS entry (the command left for the caller)."""
    config, curve = result["config"], [e[names.KNN_ACC] for e in result["history"]]
    plateau = plateau_of(curve)
    key = (config["loss.name"], config["data.dataset"], config["model.arch"])
    ratio = float(config.get("data.imbalance_ratio", 10.0))
    return key, Plateau(round(plateau, 4), len(curve), epochs_to(curve, 0.9, plateau), "", ratio)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.convergence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="JSON results of long trials (trainables.trial --output)")
    parser.add_argument("--figure", help="also draw the learning curves (validation kNN accuracy) into this PNG")
    args = parser.parse_args(argv)
    results = []
    for path in args.results:
        with open(path) as f:
            results.append(json.load(f))
        key, plateau = measure(results[-1])
        print(f"{key}: Plateau(knn_acc={plateau.knn_acc}, epochs={plateau.epochs}, to_90={plateau.to_90}, "
              f"command=..., ratio={plateau.ratio:g}),")
    if args.figure:
        from analysis.figures import learning_curves
        learning_curves(results, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())


INTERVAL_COLUMNS = {names.probe_metric(names.LT, names.TOP1): "lt top-1",
                    names.probe_metric(names.LT, names.BALANCEDNESS): "lt p(V)",
                    names.probe_metric(names.BALANCED, names.TOP1): "balanced top-1",
                    names.probe_metric(names.BALANCED, names.BALANCEDNESS): "balanced p(V)",
                    "convergence": "convergence"}


def interval_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per loss and level: the trials, and for both probes' top-1 and p(V) and the
    convergence, "mean [low, high]" (95% t interval over the trials)."""
    from analysis.selection import mean_ci
    out = []
    for (loss, ratio), group in rows.groupby(["loss.name", "data.imbalance_ratio"]):
        row = {"loss": loss, "ratio": ratio, "trials": len(group)}
        for column, title in INTERVAL_COLUMNS.items():
            m, lo, hi = mean_ci(group[column]) if column in group else (math.nan,) * 3
            row[title] = f"{m:.3f}" if math.isnan(lo) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"
        out.append(row)
    return pd.DataFrame(out)


def report_section(paths, ok: pd.DataFrame, markdown_table) -> list[str]:
    """The report's convergence section: per loss and level, the trials' mean and lowest
    convergence, and which trials have no reference plateau; nothing without a history."""
    from analysis.results import load_history
    history = pd.concat([load_history(p, columns=["trial_id", names.EPOCH, names.KNN_ACC]) for p in paths])
    table = convergence_table(ok[["trial_id", "loss.name", "data.dataset", "model.arch", "data.imbalance_ratio"]],
                              history) if len(history) else pd.DataFrame()
    if table.empty:
        return []
    parts = ["## How far from converged",
             f"Each trial's validation kNN accuracy at its last epoch as a fraction of its loss's plateau on "
             f"this dataset and architecture, measured at the imbalance ratio nearest the trial's (`plateau "
             f"ratio`; the mean over the last {TAIL:.0%} of a long run's epochs; "
             "`analysis/convergence.py` holds the plateaus with the commands that measured them). Below "
             "about 0.9 an encoder is still learning, and a comparison with it compares training lengths too."]
    measured = table.dropna(subset=["convergence"])
    if len(measured):
        summary = measured.groupby(["loss.name", "data.imbalance_ratio"])["convergence"].agg(
            trials="size", mean="mean", lowest="min").reset_index()
        parts.append(markdown_table(summary))
        parts += ["Per loss and level, the mean over the trials (seeds, or a search's trials) and its 95% t "
                  "interval, top-1 and p(V) beside the convergence:",
                  markdown_table(interval_table(ok.merge(table[["trial_id", "convergence"]], on="trial_id")))]
        shown = measured.sort_values(["loss.name", "data.imbalance_ratio", "convergence"]).head(TRIALS_SHOWN)
        parts += [f"Every trial{'' if len(measured) <= TRIALS_SHOWN else f' (the {TRIALS_SHOWN} least converged)'}:",
                  markdown_table(shown.round({names.KNN_ACC: 3, "plateau": 3, "convergence": 3}))]
    missing = table[table["convergence"].isna()]
    if len(missing):
        keys = sorted({(r["loss.name"], r["data.dataset"], r["model.arch"])
                       for r in ok[ok["trial_id"].isin(missing["trial_id"])].to_dict("records")})
        parts.append(f"No measured plateau for {len(missing)} trial(s): "
                     + ", ".join(f"{loss} on {data} with {arch}" for loss, data, arch in keys) + ".")
    return parts
