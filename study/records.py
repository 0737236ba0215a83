"""One trial's record, shared by the Parquet and MLflow sinks, and the fixed
Parquet schema (architecture note, "Results").

Columns: identity (trial_id, study, sweep; confirm_of: the search trial a confirmation
trial re-runs with a new seed, null otherwise), status and error, provenance
(seed, wall time, device, git commit, package versions), the resolved config
flattened under its dotted keys (keys the loss or dataset does not read are
null), the long-tail draw (class_counts, class_order as lists), and the metrics
named by trainables.names: per probe "<probe>/<metric>" scalars and
"<probe>/per_class_acc" lists, pretraining summaries "pretrain/<name>", and the
select study's objectives "select/<strategy>/<measure>".
"""

from __future__ import annotations

import json
import typing

import pyarrow as pa

from trainables import names
from trainables.config import TrialConfig, flat_keys
from trainables.selection import STRATEGIES

_ARROW = {int: pa.int64(), float: pa.float64()}
SELECTION_SCHEMA = pa.schema([("trial_id", pa.string()), ("strategy", pa.string()), ("budget", pa.int64()),
                              *[(m, _ARROW[t]) for m, t in names.SELECTION_MEASURES.items()],
                              (names.PER_CLASS, pa.list_(pa.float64()))])
HISTORY_SCHEMA = pa.schema([("trial_id", pa.string()), (names.EPOCH, pa.int64()),
                            *[(m, pa.float64()) for m in names.EPOCH_METRICS],
                            *[(m, pa.list_(pa.float64())) for m in names.EPOCH_LISTS]])


def _config_type(key: str) -> pa.DataType:
    section, _, name = key.rpartition(".")
    cls = type(getattr(TrialConfig(), section)) if section else TrialConfig
    options = typing.get_args(typing.get_type_hints(cls)[name]) or (typing.get_type_hints(cls)[name],)
    for py, arrow in ((bool, pa.bool_()), (int, pa.int64()), (float, pa.float64())):
        if py in options:
            return arrow
    return pa.string()


def results_schema() -> pa.Schema:
    fields = [("trial_id", pa.string()), ("study", pa.string()), ("sweep", pa.string()),
              (names.STATUS, pa.string()), ("error", pa.string()),
              (names.WALL_TIME, pa.float64()), ("device_used", pa.string()), ("git_commit", pa.string()),
              ("versions", pa.string()), ("num_classes", pa.int64()),
              ("class_counts", pa.list_(pa.int64())), ("class_order", pa.list_(pa.int64())),
              ("draw_digest", pa.string()), (names.CONFIRM_COLUMN, pa.string())]
    fields += [(key, _config_type(key)) for key in flat_keys()]
    for probe in names.PROBES:
        fields += [(name, pa.float64()) for name in names.probe_columns(probe)]
        fields.append((names.probe_metric(probe, names.PER_CLASS), pa.list_(pa.float64())))
    fields += [(names.pretrain_column(n), _ARROW[t]) for n, t in names.PRETRAIN_SUMMARY.items()]
    # the select study's objectives (mean over budgets), so that its frontier can be read from rows
    fields += [(names.select_objective(s, m), pa.float64())
               for s in STRATEGIES for m in names.SELECT_OBJECTIVE_MEASURES]
    return pa.schema(fields)


def config_columns(config: dict) -> dict:
    """The resolved, active-only config; a config that does not even parse keeps its raw values.
    The driver's private keys (names.trial_config) are not part of it."""
    config = names.trial_config(config)
    try:
        return TrialConfig.from_flat(config).to_flat(active_only=True)
    except (ValueError, TypeError):
        return {k: config.get(k) for k in flat_keys()}


def trial_row(trial_id: str, config: dict, result: dict | None, provenance: dict,
              status: str = "error", error: str | None = None) -> dict:
    """One results row.

    result: TrialResult.to_dict() of a finished trial (its own status, "ok" or
    "diverged"; "stopped" for the result a trial sent at a rung where the scheduler
    then stopped it), or None for a trial without one: `status` says why ("error" for
    a trial that raised, with `error`; "stopped" for one ASHA stopped between rungs).
    provenance: study, sweep, git_commit, versions (dict).
    """
    # The worker's own versions (torch there) win over the driver's.
    versions = {**provenance["versions"], **(result or {}).get("versions", {})}
    row = {"trial_id": trial_id, "study": provenance["study"], "sweep": provenance["sweep"],
           "git_commit": provenance["git_commit"], "versions": json.dumps(versions),
           names.STATUS: status if result is None else result[names.STATUS], "error": error,
           names.CONFIRM_COLUMN: config.get(names.CONFIRM_OF),
           **config_columns(config)}           # includes "seed"
    if result is None:
        return row
    row.update(device_used=result["device"], num_classes=result["num_classes"],
               class_counts=result["class_counts"], class_order=result["class_order"],
               draw_digest=result.get("draw_digest"))
    # the scalars exactly as the other sinks get them; lists beside them
    row.update(names.final_metrics(result))
    for probe, metrics in result["probes"].items():
        row[names.probe_metric(probe, names.PER_CLASS)] = metrics[names.PER_CLASS]
    return row


def selection_rows(trial_id: str, rows: list[dict]) -> list[dict]:
    """The select study's rows of one trial (TrialResult.selection), keyed by trial id."""
    return [{"trial_id": trial_id, **{n: row[n] for n in SELECTION_SCHEMA.names[1:]}} for row in rows]


def history_rows(trial_id: str, epochs: list[dict]) -> list[dict]:
    """Per-epoch rows from the loop's metrics dicts (TrialResult.history, or the reports seen)."""
    names = HISTORY_SCHEMA.names[1:]
    return [{"trial_id": trial_id, **{n: epoch.get(n) for n in names}} for epoch in epochs]

