"""MLflow tracking: the driver is the only writer (a Tune callback), workers never touch the store.

One experiment per study; one parent run per sweep (tags: study, sweep, git
commit, command line); one child run per trial with the active config as params,
per-epoch metrics with their step, and the final metrics of
`trainables.names.final_metrics` (per probe top-1, many/medium/few, p(V), std,
worst class, one "<probe>/class_acc/NNN" per class; the selection's measures;
the pretraining summary; wall time), the same that the Parquet row holds. A failed trial's run ends FAILED with
the error as a tag. Child runs carry a `trial_id` tag, so a resumed sweep finds
and reuses them instead of opening duplicates.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from pathlib import Path

from ray.tune import Callback

from study.parquet_sink import error_message, final_result
from study.records import config_columns
from trainables import names


def _client(uri: str):
    from mlflow.tracking import MlflowClient  # lazy: mlflow is slow to import
    return MlflowClient(tracking_uri=uri)


def start_parent_run(uri: str, study: str, sweep: str, tags: dict, artifact_root: Path) -> tuple[str, str]:
    """Create (or find) the study's experiment and open the sweep's parent run.

    Called once, in the driver, before any trial starts: the first use of a
    sqlite store creates its tables, and concurrent first uses race. A local
    store keeps its artifacts (the report) under `artifact_root`, never in the
    current directory; a tracking server decides for itself.
    Returns (experiment_id, parent_run_id).
    """
    client = _client(uri)
    experiment = client.get_experiment_by_name(study)
    if experiment:
        experiment_id = experiment.experiment_id
    elif uri.startswith(("http://", "https://")):
        experiment_id = client.create_experiment(study)
    else:
        experiment_id = client.create_experiment(study, artifact_location=(artifact_root / study).as_uri())
    run = client.create_run(experiment_id, run_name=sweep,
                            tags={"study": study, "sweep": sweep, **tags})
    return experiment_id, run.info.run_id


def end_parent_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(uri).set_terminated(run_id, status)


def attach_folder(uri: str, run_id: str, folder: Path, name: str) -> None:
    """Upload a folder's files (the report and its figures) as the run's artifacts."""
    _client(uri).log_artifacts(run_id, str(folder), artifact_path=name)


def drop_orphan_runs(uri: str, experiment_id: str, parent_run_id: str, trial_ids: set[str]) -> list[str]:
    """Delete the sweep's child runs whose trial has no results row; return their trial ids.

    Such a run belongs to a trial that a killed driver had started after its last
    saved experiment state: the resumed search never knew it and suggested another
    trial in its place. The run is tagged with the reason and soft-deleted (MLflow
    keeps it, restorable), so that the sweep's runs match its rows. Only this
    sweep's parent run's children are looked at (another sweep of the same name may
    share a tracking server), and all pages are read before anything is deleted.
    """
    client, runs, token = _client(uri), [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    orphans = []
    for run in runs:
        trial_id = run.data.tags.get("trial_id")
        if trial_id is not None and trial_id not in trial_ids:
            client.set_tag(run.info.run_id, "orphaned", "started by a driver that was killed before saving it; "
                           "the resumed sweep replaced the trial")
            client.delete_run(run.info.run_id)
            orphans.append(trial_id)
    return orphans


class MlflowSink(Callback):
    """Driver-side Tune callback writing one child run per trial under the parent run."""

    def __init__(self, uri: str, tracking: dict | Future, provenance: dict):
        """tracking: {"experiment_id", "parent_run_id"}, or a Future of it: the runner
        opens the store in a thread while Ray starts the first trial (a new sqlite
        store takes seconds to create), and the sink waits for it on first use."""
        self.uri, self._tracking = uri, tracking
        self.study, self.sweep = provenance["study"], provenance["sweep"]
        # provenance travels with every run, not only with the parent
        self.provenance_tags = {"git_commit": provenance["git_commit"],
                                **{f"version.{k}": v for k, v in provenance["versions"].items()}}
        self.runs: dict[str, str] = {}          # trial id -> run id
        self._mlflow = None
        self._restored = False                  # a resumed sweep looks for runs it opened before

    def __getstate__(self):
        # Tune pickles callbacks with the experiment (for --resume); the client is rebuilt.
        return {**self.__dict__, "_tracking": self.tracking, "_mlflow": None, "_restored": True}

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
            self._mlflow = _client(self.uri)
        return self._mlflow

    def _run_id(self, trial) -> str:
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        found = self._restored and self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.trial_id = '{trial.trial_id}' and tags.sweep = '{self.sweep}'")
        if found:
            run_id = found[0].info.run_id
        else:
            run = self.client.create_run(self.experiment_id, run_name=trial.trial_id, tags={
                "mlflow.parentRunId": self.parent_run_id, "trial_id": trial.trial_id,
                "study": self.study, "sweep": self.sweep, **self.provenance_tags})
            run_id = run.info.run_id
            self._log(run_id, params={k: v for k, v in config_columns(trial.config).items() if v is not None})
        self.runs[trial.trial_id] = run_id
        return run_id

    def _log(self, run_id: str, metrics: dict | None = None, step: int = 0, params: dict | None = None,
             tags: dict | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag
        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None]
        # MLflow takes at most 1000 metrics per batch; ImageNet-LT has 1000 classes per probe
        for start in range(0, max(len(entries), 1), 1000):
            first = start == 0
            self.client.log_batch(
                run_id, metrics=entries[start:start + 1000],
                params=[Param(k, str(v)) for k, v in (params or {}).items()] if first else [],
                tags=[RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()] if first else [])

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # The final report also carries the last epoch's metrics (the adapter holds them back).
        if names.EPOCH in result:
            self._log(self._run_id(trial), {k: result[k] for k in names.EPOCH_METRICS if k in result},
                      step=int(result[names.EPOCH]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id, result = self._run_id(trial), final_result(trial)
        if result is None:
            self._log(run_id, tags={names.STATUS: "stopped"})
        else:
            self._log(run_id, names.final_metrics(result), step=result["pretrain"][names.PRETRAIN_EPOCHS],
                      tags={names.STATUS: result[names.STATUS], "device": result["device"]})
        self.client.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run_id(trial)
        self._log(run_id, tags={names.STATUS: "error", "error": error_message(trial)})
        self.client.set_terminated(run_id, "FAILED")
