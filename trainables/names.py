"""Every name a trial's result travels under, built here and nowhere else.

A finished trial reaches three sinks: the final Tune report (the searcher and
the progress line read it), its MLflow child run and its Parquet row; analysis
reads the Parquet columns back. All of them take their keys from this module,
and `final_metrics` is the one rule for which scalar metrics a trial has, so a
renamed metric cannot vanish from one sink (docs/architecture.md, "Result names").

    <probe>/<metric>                      lt/top1, balanced/balancedness (PROBES x PROBE_METRICS)
    <probe>/per_class_acc                 Parquet list column, one accuracy per class
    <probe>/class_acc/NNN                 the same accuracies, one metric per class (Tune, MLflow)
    pretrain/<name>                       the pretraining summary (PRETRAIN_SUMMARY)
    select/<strategy>/<budget>/<measure>  one selected set (Tune, MLflow; Parquet: results/selection)
    select/<strategy>/<measure>           mean over budgets: the select study's objectives
    loss, knn_acc, knn_balancedness, ...  per epoch (EPOCH_METRICS), step "epoch"
    knn_per_class_acc                     per epoch, a list (EPOCH_LISTS): Tune, results/history
    wall_time_s                           the trial's wall time

A value that is None or NaN (a many/medium/few group with no class) is absent
from every sink rather than recorded as a made-up number. This module imports
nothing heavy: analysis uses it without torch or Ray.
"""

from __future__ import annotations

import math

# Each name has a constant, so that no other module spells it.
LT, BALANCED = PROBES = ("lt", "balanced")     # long-tailed train set; balanced subset of the same size
GROUPS = MANY, MEDIUM, FEW = ("many", "medium", "few")     # head, middle and tail classes
TOP1, BALANCEDNESS, ACC_STD, WORST_CLASS_ACC = "top1", "balancedness", "acc_std", "worst_class_acc"
PROBE_METRICS = (TOP1, *GROUPS, BALANCEDNESS, ACC_STD, WORST_CLASS_ACC)
PER_CLASS = "per_class_acc"
ACC_CV = "acc_cv"
DERIVED_PROBE_METRICS = (ACC_CV,)              # analysis.tables adds these from the per-class list
EPOCH = "epoch"
LOSS, KNN_ACC, LR, IMAGES_PER_S, MEAN_POSITIVES = "loss", "knn_acc", "lr", "images_per_s", "mean_positives"
# The kNN monitor on the balanced validation set: its top-1 and the p(V) of its per-class
# accuracies, ASHA's and MO-ASHA's objectives; the accuracies themselves as a list.
KNN_BALANCEDNESS, KNN_PER_CLASS = "knn_balancedness", "knn_per_class_acc"
EPOCH_METRICS = (LOSS, KNN_ACC, KNN_BALANCEDNESS, LR, IMAGES_PER_S, MEAN_POSITIVES)
EPOCH_LISTS = (KNN_PER_CLASS,)                 # per epoch too: Tune and results/history, not MLflow
# name -> Python type of the pretraining summary columns
PRETRAIN_EPOCHS = "epochs_completed"
PRETRAIN_SUMMARY = {PRETRAIN_EPOCHS: int, "final_loss": float, "final_knn_acc": float,
                    "mean_positives": float, "images_per_s": float, "resumed_from_epoch": int,
                    "train_seconds": float, "parameters": int}
# The scalar measures of one selected set (a row of results/selection), and which of
# them the select study's objectives average over budgets.
BALANCE_MEASURES = CLASSES_COVERED, IMBALANCE, ENTROPY = ("classes_covered", "imbalance", "entropy")
SELECTION_MEASURES = {CLASSES_COVERED: int, IMBALANCE: float, ENTROPY: float, TOP1: float,
                      BALANCEDNESS: float, WORST_CLASS_ACC: float}
SELECT_OBJECTIVE_MEASURES = (TOP1, ENTROPY)
WALL_TIME = "wall_time_s"
# The final Tune report's payload for the driver's sinks: the TrialResult as JSON, its status.
RESULT_PAYLOAD = "trial_result"
STATUS = "status"
# A trial that a resumed sweep continues from an earlier trial's weights-only checkpoint
# gets that checkpoint's folder under this private key of its Tune config (study.journal).
FROM_CHECKPOINT = "_from_checkpoint"
# The epochs at which a trial runs its probes before it goes on (MO-ASHA's rungs: the
# scheduler may stop it there, study.moasha), also a private key of its Tune config.
PROBE_AT = "_probe_at"
# A confirmation trial (study.confirm) re-runs a Pareto-optimal search trial with a new seed:
# the search trial's id under this private key of its Tune config, and in this row column.
CONFIRM_OF = "_confirm_of"
CONFIRM_COLUMN = "confirm_of"


def trial_config(config: dict) -> dict:
    """A Tune config without the driver's private keys (those starting with "_")."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _known(name: str, options) -> str:
    if name not in options:
        raise KeyError(f"unknown result name {name!r}; known: {', '.join(options)}")
    return name


def probe_metric(probe: str, metric: str) -> str:
    """"lt/top1": a probe's scalar metric (or its per-class list for metric=PER_CLASS)."""
    return f"{_known(probe, PROBES)}/{_known(metric, (*PROBE_METRICS, PER_CLASS, *DERIVED_PROBE_METRICS))}"


def probe_columns(probe: str) -> list[str]:
    """The scalar metric names of one probe, in PROBE_METRICS order."""
    return [probe_metric(probe, m) for m in PROBE_METRICS]


def probe_of(name: str) -> str | None:
    """The probe of a "<probe>/<metric>" name, None for any other name."""
    probe, sep, metric = name.partition("/")
    return probe if sep and probe in PROBES and metric in (*PROBE_METRICS, *DERIVED_PROBE_METRICS) else None


def balancedness_at(probe: str, sigma: float) -> str:
    """"lt/balancedness@0.5": p(V) recomputed by analysis at another kernel width."""
    return f"{probe_metric(probe, BALANCEDNESS)}@{sigma:g}"


def class_acc(probe: str, c: int) -> str:
    """"lt/class_acc/003": class c's accuracy as its own metric."""
    return f"{_known(probe, PROBES)}/class_acc/{c:03d}"


def pretrain_column(name: str) -> str:
    return f"pretrain/{_known(name, tuple(PRETRAIN_SUMMARY))}"


def select_metric(strategy: str, budget: int, measure: str) -> str:
    return f"select/{strategy}/{int(budget)}/{_known(measure, tuple(SELECTION_MEASURES))}"


def select_objective(strategy: str, measure: str) -> str:
    """"select/spread/top1": the mean of a measure over the trial's budgets."""
    return f"select/{strategy}/{_known(measure, SELECT_OBJECTIVE_MEASURES)}"


def sweep_objectives(probe: str, objective: str) -> list[str]:
    """What `--objective` (multi, top1 or balancedness) and `--probe` make Optuna maximise."""
    names = [TOP1, BALANCEDNESS] if objective == "multi" else [objective]
    return [probe_metric(probe, n) for n in names]


def _record(names: tuple, values: dict, what: str) -> dict:
    """values as a result record, its keys exactly `names` (a renamed metric fails here,
    where it is produced, rather than vanishing from a sink)."""
    if set(values) != set(names):
        raise KeyError(f"{what} keys {sorted(values)} differ from {sorted(names)}")
    return dict(values)


def probe_record(**values) -> dict:
    """One probe's result (trainables.metrics.summarize): PROBE_METRICS and PER_CLASS."""
    return _record((*PROBE_METRICS, PER_CLASS), values, "probe")


def selection_record(**values) -> dict:
    """One selected set's row: strategy, budget, SELECTION_MEASURES and PER_CLASS."""
    return _record(("strategy", "budget", *SELECTION_MEASURES, PER_CLASS), values, "selection")


def pretrain_record(**values) -> dict:
    """The pretraining summary: PRETRAIN_SUMMARY, plus whether the encoder was compiled."""
    return _record((*PRETRAIN_SUMMARY, "compiled"), values, "pretrain")


def epoch_record(epoch: int, **metrics) -> dict:
    """One epoch's report: {"epoch": epoch, **metrics}, metrics named in EPOCH_METRICS
    (None values left out: mean_positives for cross-entropy)."""
    for name in metrics:
        _known(name, (*EPOCH_METRICS, *EPOCH_LISTS))
    return {EPOCH: epoch, **{k: v for k, v in metrics.items() if v is not None}}


def present(value) -> bool:
    """A value a sink records: not None, not NaN."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _select_means(selection: list[dict]) -> dict[str, float]:
    out = {}
    for strategy in dict.fromkeys(row["strategy"] for row in selection):
        rows = [row for row in selection if row["strategy"] == strategy]
        out.update({select_objective(strategy, m): sum(r[m] for r in rows) / len(rows)
                    for m in SELECT_OBJECTIVE_MEASURES})
    return out


def final_metrics(result: dict) -> dict[str, float]:
    """The scalar end-of-trial metrics of a TrialResult dict (TrialResult.to_dict()).

    The same dict goes into the final Tune report and the MLflow run, and the
    Parquet row holds the same values (`row_metrics` reads them back). A diverged
    trial has no probes and no selection, so no searcher learns from made-up values.
    """
    out = {}
    for probe, metrics in result["probes"].items():
        out.update({probe_metric(probe, m): metrics[m] for m in PROBE_METRICS})
        out.update({class_acc(probe, c): a for c, a in enumerate(metrics[PER_CLASS])})
    for row in result.get("selection", []):
        out.update({select_metric(row["strategy"], row["budget"], m): row[m] for m in SELECTION_MEASURES})
    out.update(_select_means(result.get("selection", [])))
    out.update({pretrain_column(n): result["pretrain"][n] for n in PRETRAIN_SUMMARY})
    out[WALL_TIME] = result[WALL_TIME]
    return {k: v for k, v in out.items() if present(v)}


def row_metrics(row: dict, selection: list[dict] = ()) -> dict[str, float]:
    """The metrics `final_metrics` gave, read back from a Parquet row (and the trial's
    rows of results/selection): the inverse that the sinks' agreement is tested by."""
    out = {}
    for probe in PROBES:
        out.update({name: row.get(name) for name in probe_columns(probe)})
        per_class = row.get(probe_metric(probe, PER_CLASS))
        if per_class is not None and len(per_class):
            out.update({class_acc(probe, c): a for c, a in enumerate(per_class)})
    for sel in selection:
        out.update({select_metric(sel["strategy"], sel["budget"], m): sel[m] for m in SELECTION_MEASURES})
    for strategy in dict.fromkeys(sel["strategy"] for sel in selection):
        out.update({name: row.get(name) for name in
                    (select_objective(strategy, m) for m in SELECT_OBJECTIVE_MEASURES)})
    out.update({pretrain_column(n): row.get(pretrain_column(n)) for n in PRETRAIN_SUMMARY})
    out[WALL_TIME] = row.get(WALL_TIME)
    return {k: float(v) for k, v in out.items() if present(v)}
