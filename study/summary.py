"""The end-of-sweep summary: Pareto-optimal trials per imbalance level, counts by
status, and where everything was written."""

from __future__ import annotations

import pandas as pd

from analysis.confirmation import split, summary_lines
from analysis.results import load_results
from analysis.selection import ENCODER, has_selection, load_selection
from analysis.tables import add_derived, frontier_members, ok_trials
from study.optuna_store import dashboard_command
from study.plan import SweepPlan
from study.studies import STUDIES
from trainables import names


def mlflow_ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser (the MLflow server's own UI)"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"


def where_to_look(plan: SweepPlan) -> str:
    """The commands that show the sweep while it runs and after: MLflow's UI (which opens on
    its GenAI page, so the way to the runs is spelled out) and, for a search, optuna-dashboard."""
    lines = [f"compare runs:      {mlflow_ui_command(plan.mlflow_uri)}",
             f'                   then "Model training" (top left) > experiment {plan.study} > run {plan.name}']
    if STUDIES[plan.study].space is not None:
        lines.append(f"Optuna studies:    {dashboard_command(plan.optuna_uri)}")
    return "\n".join(lines)


def _print_frontier(ok: pd.DataFrame, plan: SweepPlan) -> None:
    """The Pareto-optimal trials of the sweep's own objectives, per level (and loss)."""
    missing = sorted(set(plan.objectives) - set(ok.columns))
    if missing:      # a schema that lost an objective column: say so, never skip quietly
        print(f"\nno frontier: the results have no column {', '.join(missing)}")
        return
    table = frontier_members(ok, plan.objectives, per_level=bool(plan.levels))
    print(f"\nPareto-optimal trials per imbalance level ({' and '.join(plan.objectives)}):")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(table.to_string(index=False))


NOTE_CHARS = 8000                # MLflow's limit on a tag's value


def parent_description(plan: SweepPlan) -> str:
    """The sweep's MLflow parent run description (markdown): what the study asks, and the
    Pareto-optimal trials per imbalance level of the sweep's objectives."""
    from analysis.markdown import escape, markdown_table
    study = STUDIES[plan.study]
    text = [f"**{plan.study}**: {escape(study.description)}", "", escape(study.question)]
    try:
        ok = add_derived(ok_trials(split(load_results(plan.sweep_dir))[0]))
    except FileNotFoundError:
        return "\n".join(text)
    if len(ok) and set(plan.objectives) <= set(ok.columns):
        table = frontier_members(ok, plan.objectives, per_level=bool(plan.levels))
        text += ["", f"Pareto-optimal trials per imbalance level ({' and '.join(plan.objectives)}):", "",
                 markdown_table(table)]
    text = "\n".join(text)
    cut = "\n\n(cut here: MLflow keeps 8,000 characters; the report has the whole table)"
    return text if len(text) <= NOTE_CHARS else text[:NOTE_CHARS - len(cut)].rsplit("\n", 1)[0] + cut


def summarize_sweep(plan: SweepPlan) -> bool:
    """Print the summary; True if at least one trial finished with status ok."""
    try:
        df = load_results(plan.sweep_dir)
    except FileNotFoundError:
        print(f"no trial finished; Ray's logs are in {plan.where}")
        return False
    counts = df[names.STATUS].value_counts().to_dict()
    search, confirmations = split(df)
    of = f" ({len(search)} search, {len(confirmations)} confirmations)" if len(confirmations) else ""
    print(f"\n{len(df)} trials{of}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    ok = add_derived(ok_trials(search))
    if len(ok):
        _print_frontier(ok, plan)
    if len(confirmations) and set(plan.objectives) <= set(df.columns):
        print("\n".join(summary_lines(df, plan.objectives)))
    if len(ok) and has_selection(plan.sweep_dir):
        measures = list(names.SELECT_OBJECTIVE_MEASURES)
        means = load_selection(plan.sweep_dir).groupby([ENCODER, "strategy"])[measures].mean()
        print("\nselected sets, mean over budgets, levels and seeds (probe top-1; label entropy):")
        print(means.unstack(ENCODER).round(3).to_string())
    errors = df[df[names.STATUS] == "error"]
    for _, row in errors.head(5).iterrows():
        print(f"error in {row['trial_id']}: {row['error']}")
    print(f"\nresults (Parquet): {plan.where}/results\nRay experiment:    {plan.where}\n"
          f"MLflow store:      {plan.mlflow_uri}\n{where_to_look(plan)}")
    return counts.get("ok", 0) > 0
