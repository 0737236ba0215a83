"""The end-of-sweep summary: Pareto-optimal trials per imbalance level, counts by
status, and where everything was written."""

from __future__ import annotations

import pandas as pd

from analysis.frontier import pareto_mask
from analysis.results import load_results
from study.plan import SweepPlan

KNOBS = ("loss.name", "loss.k", "loss.temperature", "optim.lr", "optim.weight_decay", "seed")


def pareto_table(df: pd.DataFrame, objectives: list[str], per_level: bool = True) -> pd.DataFrame:
    """The trials on each (loss, imbalance level)'s front of `objectives`, best first.

    per_level=False (a searched ratio, --imbalance-range, differs in every trial):
    one front per loss over all its trials.
    """
    ok = df[df["status"] == "ok"]
    fronts = []
    for _, group in ok.groupby(["loss.name", "data.imbalance_ratio"] if per_level else ["loss.name"]):
        fronts.append(group[pareto_mask(group[objectives].to_numpy())])
    if not fronts:
        return pd.DataFrame()
    probe = objectives[0].split("/")[0]
    varied = [k for k in KNOBS if k == "loss.name" or ok[k].nunique() > 1]   # the searched knobs
    columns = ["data.imbalance_ratio", *varied,
               f"{probe}/top1", f"{probe}/balancedness", f"{probe}/few", "trial_id"]
    table = pd.concat(fronts)[columns]
    return table.sort_values(["data.imbalance_ratio", f"{probe}/top1"], ascending=[True, False])


def mlflow_ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser (the MLflow server's own UI)"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"


def summarize_sweep(plan: SweepPlan) -> bool:
    """Print the summary; True if at least one trial finished with status ok."""
    try:
        df = load_results(plan.sweep_dir)
    except FileNotFoundError:
        print(f"no trial finished; Ray's logs are in {plan.sweep_dir}")
        return False
    counts = df["status"].value_counts().to_dict()
    print(f"\n{len(df)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    table = pareto_table(df, plan.objectives, per_level=bool(plan.levels))
    if len(table):
        print(f"\nPareto-optimal trials per imbalance level ({' and '.join(plan.objectives)}):")
        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
            print(table.to_string(index=False))
    errors = df[df["status"] == "error"]
    for _, row in errors.head(5).iterrows():
        print(f"error in {row['trial_id']}: {row['error']}")
    print(f"\nresults (Parquet): {plan.results_dir}\nRay experiment:    {plan.sweep_dir}\n"
          f"MLflow store:      {plan.mlflow_uri}\ncompare runs:      {mlflow_ui_command(plan.mlflow_uri)}")
    return counts.get("ok", 0) > 0
