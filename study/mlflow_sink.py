"""MLflow tracking: the driver is the only writer (a Tune callback), workers never touch the store.

One experiment per study; one parent run per sweep (tags: study, sweep, git
commit, command line); one child run per trial with the active config as params,
per-epoch metrics with their step, and the final metrics of
`trainables.names.final_metrics` (per probe top-1, many/medium/few, p(V), std,
worst class, one "<probe>/class_acc/NNN" per class; the selection's measures;
the pretraining summary; wall time), the same that the Parquet row holds. A failed trial's run ends FAILED with
the error as a tag. Child runs carry a `trial_id` tag, so a resumed sweep finds
and reuses them instead of opening duplicates.

MLflow is never on the trials' path: the callbacks only queue the work, a
background writer (study.tracking.Writer) does it and retries while the store is
away, and at the end `reconcile` fills in, from the Parquet rows, whatever runs
MLflow did not get. Parquet is the record; MLflow is its view.
"""

from __future__ import annotations

import sys
import time
import weakref
from concurrent.futures import Future
from pathlib import Path

from ray.tune import Callback

from study.mlflow_store import (confirm_tags, log_batch, log_dataset, log_missing_runs, open_client, run_name,
                                transient, varied_keys)
from study.parquet_sink import error_message, final_result
from study.records import config_columns
from study.tracking import Writer, bounded, check_uri, probe_server
from trainables import names

FLUSH_S = 30.0           # at a sweep's end, how long the queued writes may take
RECONCILE_S = 120.0      # and the filling in of runs from the rows
_LIVE: weakref.WeakSet = weakref.WeakSet()       # sinks with a writer, for close_sinks
_BUSY: weakref.WeakSet = weakref.WeakSet()       # closed sinks whose last write was still under way


class MlflowSink(Callback):
    """Driver-side Tune callback writing one child run per trial under the parent run.

    The callbacks only queue (Tune's loop, and the trials, never wait on MLflow);
    the writer thread opens, logs and ends the runs, retrying while MLflow is away."""

    def __init__(self, uri: str, tracking: dict | Future, provenance: dict):
        """tracking: {"experiment_id", "parent_run_id"}, or a Future of it: the runner
        opens the store in a thread while Ray starts the first trial (a new sqlite
        store takes seconds to create), and the writer waits for it on first use.
        A sink built with a resumed sweep's ids finds the runs it opened before."""
        self.uri, self._tracking = uri, tracking
        self.study, self.sweep = provenance["study"], provenance["sweep"]
        self.name_keys = varied_keys(self.study)             # what the runs' names show
        # provenance travels with every run, not only with the parent
        self.provenance_tags = {"git_commit": provenance["git_commit"],
                                **{f"version.{k}": v for k, v in provenance["versions"].items()}}
        self.runs: dict[str, str] = {}          # trial id -> run id
        self.finished: set[str] = set()         # trial ids whose run has ended
        self._mlflow = self._writer = None

    def __getstate__(self):
        # Tune pickles callbacks with its experiment state: the client and the writer
        # (a thread and its queue) stay behind; what was queued is reconcile's to redo.
        return {**self.__dict__, "_tracking": self.tracking, "runs": dict(self.runs),
                "finished": set(self.finished), "_mlflow": None, "_writer": None}

    @property
    def tracking(self) -> dict:
        if isinstance(self._tracking, Future):
            self._tracking = self._tracking.result()
        return self._tracking

    @property
    def experiment_id(self) -> str:
        return self.tracking["experiment_id"]

    @property
    def parent_run_id(self) -> str:
        return self.tracking["parent_run_id"]

    @property
    def client(self):
        if self._mlflow is None:
            self._mlflow = open_client(self.uri)
        return self._mlflow

    def _submit(self, fn, *args) -> None:
        if self._writer is None:
            self._writer = Writer(transient)
            _LIVE.add(self)
        self._writer.submit(fn, *args)

    def close(self, timeout: float) -> int:
        """Let the queued writes finish for up to `timeout` s; return how many did not."""
        _LIVE.discard(self)
        return self._writer.close(timeout) if self._writer else 0

    def _run_id(self, trial_id: str, config: dict) -> str:
        """The trial's run: found (a retried create, a resumed sweep) or created; params logged
        again each time until it is known (the same values: MLflow accepts them)."""
        if trial_id in self.runs:
            return self.runs[trial_id]
        found = self.client.search_runs([self.experiment_id], max_results=1, filter_string=(
            f"tags.trial_id = '{trial_id}' and tags.mlflow.parentRunId = '{self.parent_run_id}'"))
        if found:
            run_id = found[0].info.run_id
        else:
            confirm = confirm_tags(config.get(names.CONFIRM_OF))
            run_id = self.client.create_run(self.experiment_id, run_name=run_name(config, self.name_keys)
                                            + (" confirm" if confirm else ""), tags={
                "mlflow.parentRunId": self.parent_run_id, "trial_id": trial_id,
                "study": self.study, "sweep": self.sweep, **self.provenance_tags, **confirm}).info.run_id
        self._log(run_id, params={k: v for k, v in config_columns(config).items() if v is not None})
        self.runs[trial_id] = run_id
        return run_id

    def _log(self, run_id: str, metrics: dict | None = None, step: int = 0, params: dict | None = None,
             tags: dict | None = None) -> None:
        log_batch(self.client, run_id, metrics, step, params, tags)

    def _log_to(self, trial_id: str, config: dict, metrics: dict | None, step: int, tags: dict | None = None):
        self._log(self._run_id(trial_id, config), metrics, step, tags=tags)

    def _log_dataset(self, trial_id: str, config: dict, result: dict) -> None:
        log_dataset(self.client, self._run_id(trial_id, config), names.trial_config(config),
                    result["class_counts"], result.get("draw_digest"))

    def _end(self, trial_id: str, config: dict, status: str) -> None:
        self.client.set_terminated(self._run_id(trial_id, config), status)
        self.finished.add(trial_id)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._submit(self._run_id, trial.trial_id, dict(trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # The final report also carries the last epoch's metrics (the adapter holds them back).
        if names.EPOCH in result:
            self._submit(self._log_to, trial.trial_id, dict(trial.config),
                         {k: result[k] for k in names.EPOCH_METRICS if k in result}, int(result[names.EPOCH]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        result, config = final_result(trial), dict(trial.config)
        if result is None:
            self._submit(self._log_to, trial.trial_id, config, None, 0, {names.STATUS: "stopped"})
        else:
            self._submit(self._log_dataset, trial.trial_id, config, result)
            self._submit(self._log_to, trial.trial_id, config, names.final_metrics(result),
                         result["pretrain"][names.PRETRAIN_EPOCHS],
                         {names.STATUS: result[names.STATUS], "device": result["device"]})
        self._submit(self._end, trial.trial_id, config, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        config = dict(trial.config)
        self._submit(self._log_to, trial.trial_id, config, None, 0,
                     {names.STATUS: "error", "error": error_message(trial)})
        self._submit(self._end, trial.trial_id, config, "FAILED")


def close_sinks(timeout: float) -> set[str]:
    """Give the live sinks' writers `timeout` s in all to finish; the trial ids whose runs ended."""
    deadline, finished = time.monotonic() + timeout, set()
    for sink in list(_LIVE):
        sink.close(max(0.0, deadline - time.monotonic()))
        finished |= sink.finished
        _BUSY.update([sink] if sink._writer is not None and sink._writer.busy else [])
    return finished


def reconcile(uri: str, state: dict, sweep_dir: Path, flush_s: float | None = None,
              timeout: float | None = None) -> int:
    """Make MLflow hold what the Parquet rows hold; return how many rows still have no ended run.

    First the live sinks' queued writes get `flush_s` s; then every row
    (<sweep>/results/trials) whose trial has no ended child run under the parent gets
    one, created or completed from the row (params, final metrics, per-epoch metrics
    for a run created here), and duplicate runs of one trial (a create whose answer
    was lost, then retried) are deleted. All within `timeout` s: a server still away
    costs a few seconds (a probe), not MLflow's retries; the rows stay the record."""
    from analysis.results import load_results
    finished = close_sinks(FLUSH_S if flush_s is None else flush_s)
    try:
        rows = load_results(sweep_dir)
    except FileNotFoundError:
        return 0
    done = set(finished)
    if any(sink._writer.busy for sink in list(_BUSY)):
        # a write still under way could open a run beside the one filled in here
        print("MLflow: a write is still under way after the flush; the missing runs are left to a later "
              "--resume", file=sys.stderr)
        return len(set(rows["trial_id"]) - done)
    try:
        if check_uri(uri) == "http":
            probe_server(uri)
        bounded(log_missing_runs, uri, state, rows, sweep_dir, done,
                timeout=RECONCILE_S if timeout is None else timeout)
    except Exception as e:                      # away, or refusing: the gap is reported, not raised
        print(f"MLflow: could not log the missing runs ({str(e).splitlines()[0][:300]})", file=sys.stderr)
    return len(set(rows["trial_id"]) - set(done))


