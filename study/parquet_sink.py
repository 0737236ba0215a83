"""Parquet results: one file per trial, named by its trial id, written atomically.

    <results>/trials/<trial_id>.parquet    one row, the fixed schema of study.records
    <results>/history/<trial_id>.parquet   one row per epoch

Rewriting a trial's file replaces it, so a resumed sweep never duplicates a row,
and a crash mid-write leaves a temporary file that readers ignore, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from ray.tune import Callback

from study.storage import publish
from study.records import HISTORY_SCHEMA, SELECTION_SCHEMA, history_rows, results_schema, selection_rows, trial_row
from trainables import names
from trainables.config import flat_keys

TMP_PREFIX = ".tmp-"


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename it
    over `path`: a reader sees the old file or the whole new one, even after a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".parquet", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        publish(path)                            # a sweep in a bucket: uploaded whole, then moved
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows -> table of exactly `schema`. A config value of the wrong type becomes null
    (the config of a trial that failed validation can hold anything); any other
    mismatch is a bug and raises."""
    config_keys = set(flat_keys())
    columns = {}
    for field in schema:
        values = [row.get(field.name) for row in rows]
        try:
            columns[field.name] = pa.array(values, type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            if field.name not in config_keys:
                raise
            columns[field.name] = pa.array([None] * len(rows), type=field.type)
    return pa.table(columns, schema=schema)


class ParquetSink(Callback):
    """Driver-side Tune callback: a row for every trial that ends, failed ones included."""

    def __init__(self, results_dir: str | Path, provenance: dict):
        self.results_dir = Path(results_dir)
        self.provenance = provenance
        self.schema = results_schema()
        self.epochs: dict[str, dict[int, dict]] = {}    # trial id -> epoch -> its report

    def write(self, trial_id: str, config: dict, result: dict | None, status: str = "error",
              error: str | None = None) -> None:
        row = trial_row(trial_id, config, result, self.provenance, status, error)
        write_atomic(_table([row], self.schema), self.results_dir / "trials" / f"{trial_id}.parquet")
        # A finished trial's own history; a stopped or failed one keeps the epochs it reported.
        seen = [m for _, m in sorted(self.epochs.pop(trial_id, {}).items())]
        history = history_rows(trial_id, result["history"] if result else seen)
        if history:
            write_atomic(_table(history, HISTORY_SCHEMA), self.results_dir / "history" / f"{trial_id}.parquet")
        if result and result.get("selection"):
            write_atomic(_table(selection_rows(trial_id, result["selection"]), SELECTION_SCHEMA),
                         self.results_dir / "selection" / f"{trial_id}.parquet")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if names.EPOCH in result:
            self.epochs.setdefault(trial.trial_id, {})[int(result[names.EPOCH])] = result

    def on_trial_complete(self, iteration, trials, trial, **info):
        # No final result: the scheduler (ASHA) stopped the trial after some epoch.
        self.write(trial.trial_id, trial.config, final_result(trial), status="stopped")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.write(trial.trial_id, trial.config, None, "error", error_message(trial))


def final_result(trial) -> dict | None:
    """The TrialResult dict a finished trial reported last, or None."""
    last = trial.last_result or {}
    return json.loads(last[names.RESULT_PAYLOAD]) if names.RESULT_PAYLOAD in last else None


def error_message(trial) -> str:
    """The last line of the trial's exception (Tune writes the traceback, as text,
    to the trial's local error file before it calls the callbacks)."""
    try:
        lines = Path(trial.error_file).read_text().strip().splitlines()
        return lines[-1] if lines else "trial failed (empty error file)"
    except (OSError, TypeError):                     # TypeError: no error file recorded
        return "trial failed (no error message recorded)"
