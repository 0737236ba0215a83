"""Which searched knob mattered: Optuna's hyperparameter importance per imbalance level,
loss and objective.

For each (loss, imbalance level) of a searched study, the completed trials become an
in-memory Optuna study (their parameters and distributions from the sweep's
journal.jsonl, their objective values from the Parquet rows), and Optuna's fANOVA
evaluator (seeded) gives each knob's importance for each objective: the share of the
objective's variance over the search space that the knob explains, read off a random
forest fitted to the trials, normalised to sum 1. A forest fitted to a handful of
trials explains noise, so a level with fewer than MIN_PER_KNOB completed trials per
searched knob gets a sentence saying so instead of numbers.

The journal is the sweep's own JSON record (study.journal writes it); only its params,
distributions and trial_id fields are read, as data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from trainables import names

MIN_PER_KNOB = 5                 # completed trials per searched knob before an importance is shown
SEED = 0


def journal_params(sweep_dirs) -> dict[str, tuple[dict, dict, tuple]]:
    """trial_id -> (params, distributions as Optuna JSON, objectives) of every searched trial
    in the sweeps' journals."""
    found = {}
    for folder in sweep_dirs:
        path = Path(folder) / "journal.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                if record.get("params") and record.get("objectives"):
                    found[str(record["trial_id"])] = (dict(record["params"]), dict(record["distributions"]),
                                                      tuple(record["objectives"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue                          # a line cut short by a crash: its trial never ran
    return found


def sweep_objectives(sweep_dirs) -> list[str]:
    """What the sweeps' searches maximised (their journals' objectives, in order); [] for a
    grid or a journal without them."""
    found = {}
    for _, _, objectives in journal_params(sweep_dirs).values():
        found.update(dict.fromkeys(objectives))
    return list(found)


def _importances(group: pd.DataFrame, searched: dict, objectives) -> dict[str, dict[str, float]]:
    """objective -> {knob: importance} over the group's trials."""
    import optuna
    from optuna.distributions import json_to_distribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize"] * len(objectives))
    for row in group.to_dict("records"):
        params, distributions, _ = searched[row["trial_id"]]
        study.add_trial(optuna.trial.create_trial(
            params=params, values=[float(row[o]) for o in objectives],
            distributions={k: json_to_distribution(d) for k, d in distributions.items()}))
    return {objective: get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=SEED),
                                             target=lambda t, i=i: t.values[i])
            for i, objective in enumerate(objectives)}


def importance_table(rows: pd.DataFrame, searched: dict) -> tuple[pd.DataFrame, list[str]]:
    """(one row per loss, level, objective and knob with its importance and the trials it is
    computed from; the sentences for the levels with too few trials). `rows`: results rows
    with their objectives' columns; `searched`: journal_params."""
    out, notes = [], []
    trials = rows[rows["trial_id"].isin(searched) & (rows[names.STATUS] == "ok")].copy()
    # a level per ratio; with --imbalance-range the ratio is a searched knob, and one level holds all
    trials["level"] = [("searched" if "data.imbalance_ratio" in searched[t][0] else f"{r:g}")
                       for t, r in zip(trials["trial_id"], trials["data.imbalance_ratio"])]
    for (loss, ratio), group in trials.groupby(["loss.name", "level"], sort=True):
        objectives = list(searched[group["trial_id"].iloc[0]][2])
        group = group.dropna(subset=objectives)
        knobs = sorted(set().union(*(searched[t][0] for t in group["trial_id"])))
        need = MIN_PER_KNOB * len(knobs)
        if len(group) < need:
            notes.append(f"{loss} at ratio {ratio}: {len(group)} completed trials; an importance over "
                         f"{len(knobs)} knobs needs at least {need} ({MIN_PER_KNOB} per knob), so none is shown "
                         f"(more trials: --num-samples)")
            continue
        for objective, values in _importances(group, searched, objectives).items():
            out += [{"loss": loss, "ratio": ratio, "objective": objective, "knob": knob,
                     "importance": value, "trials": len(group)} for knob, value in values.items()]
    return pd.DataFrame(out, columns=["loss", "ratio", "objective", "knob", "importance", "trials"]), notes


def report_section(sweep_dirs, out: Path, markdown_table) -> list[str]:
    """The report's importance section: a table (knobs as columns) and a figure, or the
    sentences saying why there are none; nothing for sweeps without a search (a grid)."""
    from analysis.figures import importance_figure
    from analysis.results import load_results
    searched = journal_params(sweep_dirs)
    if not searched:
        return []
    objectives = sorted({o for _, _, objs in searched.values() for o in objs})
    rows = load_results(sweep_dirs, columns=["trial_id", names.STATUS, "loss.name", "data.imbalance_ratio",
                                             *objectives])
    table, notes = importance_table(rows, searched)
    parts = ["## Which knob mattered (hyperparameter importance)",
             f"Optuna's fANOVA importance (seed {SEED}) of each searched knob for each objective, over a "
             "level's completed trials: the share of the objective's variance across the search space that "
             f"the knob explains, normalised to sum 1. It needs {MIN_PER_KNOB} trials per knob at least; "
             "with fewer it would describe noise. Read it with the level's trial count: it says where the "
             "search found differences, not why."]
    if not table.empty:
        wide = table.pivot_table(index=["loss", "ratio", "objective", "trials"], columns="knob",
                                 values="importance").reset_index()
        parts += [markdown_table(wide), f"![importance]({importance_figure(table, out).name})"]
    return parts + [f"- {note}" for note in notes]
