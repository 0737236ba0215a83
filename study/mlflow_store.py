"""The MLflow store's operations outside the Tune callback: the parent run, the
experiment's get-or-create under the store's lock, orphaned and missing runs, and
the classification of MLflow's errors that the sink's writer retries.

Every function takes the tracking URI and imports MLflow lazily (seconds).
The runs filled in from Parquet rows are those `study.mlflow_sink.MlflowSink`
would have logged: the same params, metrics, steps and tags.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

from study.records import config_columns
from study.tracking import check_uri, sqlite_path, store_lock
from trainables import names
from trainables.config import flat_keys

ENDED = ("FINISHED", "FAILED", "KILLED")
# MLflow's answers that no retry changes (anything else: the store is away or busy)
PERMANENT = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST",
             "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED", "NOT_FOUND"}
_OPENED: set[str] = set()                        # stores this process has opened (created) already


def transient(error: BaseException) -> bool:
    """Worth retrying: the store is unreachable, slow, or locked ("database is locked")."""
    from mlflow.exceptions import MlflowException
    if isinstance(error, MlflowException):
        return error.error_code not in PERMANENT
    return isinstance(error, (OSError, TimeoutError))      # requests' errors are OSErrors


def _retry(fn, *args, attempts: int = 5, **kwargs):
    """fn, retried on transient errors: sweeps that share a sqlite store take turns writing."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if attempt == attempts - 1 or not transient(e):
                raise
            time.sleep(2 ** attempt)


def open_client(uri: str):
    """An MlflowClient. The first open of a sqlite store in a process creates or checks its
    tables; concurrent creations corrupt it (leftover _alembic_tmp_ tables), so it is locked."""
    from mlflow.tracking import MlflowClient  # lazy: mlflow is slow to import
    if uri in _OPENED or sqlite_path(uri) is None:
        return MlflowClient(tracking_uri=uri)
    with store_lock(uri):
        client = MlflowClient(tracking_uri=uri)  # opens the store (MLflow caches it per process)
    _OPENED.add(uri)
    return client


NOTE = "mlflow.note.content"                     # the UI's "Description" of a run or an experiment
SHORT = {"data.imbalance_ratio": "r", "seed": "s", "loss.temperature": "t", "optim.weight_decay": "wd"}


def run_name(config: dict, keys) -> str:
    """A child run's name from the config keys the sweep varies, e.g. `kcl k=6 t=0.30 r=10 s=0`:
    the loss first, the level and the seed last, every other key by its last part."""
    order = sorted(keys - {"loss.name", "data.imbalance_ratio", "seed"}) + ["data.imbalance_ratio", "seed"]
    parts = [str(config["loss.name"])] if config.get("loss.name") is not None else []
    parts += [f"{SHORT.get(k, k.rsplit('.', 1)[-1])}={_short(config[k])}" for k in order
              if config.get(k) is not None]
    return " ".join(parts)


def confirm_tags(confirm_of) -> dict:
    """A confirmation trial's run tag (study.confirm): the search trial it re-runs."""
    return {names.CONFIRM_COLUMN: str(confirm_of)} if names.present(confirm_of) else {}


def _short(value) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.2f}" if 0.01 <= abs(value) < 1000 else f"{value:.1e}"
    return str(value)


def dataset_input(config: dict, class_counts: list[int], digest: str):
    """The trial's long-tailed train set as an MLflow dataset input: runs on the same images
    (one digest) group together in the UI; the class counts are a tag."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    name = f"{config.get('data.dataset')} LT r={_short(config.get('data.imbalance_ratio'))}"
    source = json.dumps({"uri": config.get("data.data_root") or f"built-in:{config.get('data.dataset')}"})
    profile = json.dumps({"num_rows": int(sum(class_counts)), "num_classes": len(class_counts)})
    return DatasetInput(Dataset(name, digest, "local", source, profile=profile), tags=[
        InputTag("mlflow.data.context", "train"), InputTag("class_counts", json.dumps(list(class_counts)))])


def _experiment(client, uri: str, study: str, artifact_root: Path, question: str) -> str:
    experiment = client.get_experiment_by_name(study)
    if experiment:
        if question and NOTE not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, NOTE, question)
        return experiment.experiment_id
    location = None if check_uri(uri) == "http" else (artifact_root / study).as_uri()
    try:
        return client.create_experiment(study, artifact_location=location, tags={NOTE: question})
    except Exception as e:              # another sweep created it first (a server: no lock there)
        if getattr(e, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(study).experiment_id


def start_parent_run(uri: str, study: str, sweep: str, tags: dict, artifact_root: Path,
                     question: str = "") -> tuple[str, str]:
    """Create (or find) the study's experiment and open the sweep's parent run.

    Called once, in the driver, before any trial starts. The store's creation and
    the experiment's get-or-create hold the store's lock, so that sweeps started
    together into one new folder all succeed with one experiment. A local store
    keeps its artifacts (the report) under `artifact_root`, never in the current
    directory; a tracking server decides for itself. `question` (what the study asks) is
    the experiment's description and, until the sweep ends, the run's.
    Returns (experiment_id, parent_run_id).
    """
    client = open_client(uri)
    with store_lock(uri):
        experiment_id = _retry(_experiment, client, uri, study, artifact_root, question)
    run = _retry(client.create_run, experiment_id, run_name=sweep,
                 tags={"study": study, "sweep": sweep, NOTE: question, **tags})
    return experiment_id, run.info.run_id


def describe_run(uri: str, run_id: str, text: str) -> None:
    """The run's description in the UI (markdown)."""
    _retry(open_client(uri).set_tag, run_id, NOTE, text)


def end_parent_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    _retry(open_client(uri).set_terminated, run_id, status)


def attach_folder(uri: str, run_id: str, folder: Path, name: str) -> None:
    """Upload a folder's files (the report and its figures) as the run's artifacts.

    Through the artifact location the run has now: MlflowClient.log_artifacts caches a
    repository per run id, which in a process that saw the run before a copied sweep's
    store was rebased (study.relocate) would still write into the original's folder."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    run = open_client(uri).get_run(run_id)
    get_artifact_repository(run.info.artifact_uri, tracking_uri=uri).log_artifacts(str(folder), name)


def child_runs(client, experiment_id: str, parent_run_id: str) -> list:
    """Every (not deleted) child run of the parent, all pages read."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def drop_orphan_runs(uri: str, experiment_id: str, parent_run_id: str, trial_ids: set[str]) -> list[str]:
    """Delete the sweep's child runs whose trial has no results row; return their trial ids.

    Such a run belongs to a trial that an interrupted driver left unfinished: the
    resumed sweep continued it from its checkpoint under a new trial id (the journal,
    study.journal, records which), whose run holds the result. The run is tagged with the reason and soft-deleted (MLflow
    keeps it, restorable), so that the sweep's runs match its rows. Only this
    sweep's parent run's children are looked at (another sweep of the same name may
    share a tracking server), and all pages are read before anything is deleted.
    """
    client = open_client(uri)
    orphans = []
    for run in child_runs(client, experiment_id, parent_run_id):
        trial_id = run.data.tags.get("trial_id")
        if trial_id is not None and trial_id not in trial_ids:
            client.set_tag(run.info.run_id, "orphaned", "left unfinished by an interrupted driver; the "
                           "resumed sweep continued the trial under a new id (see journal.jsonl)")
            client.delete_run(run.info.run_id)
            orphans.append(trial_id)
    return orphans


def log_batch(client, run_id: str, metrics: dict | None = None, step: int = 0, params: dict | None = None,
               tags: dict | None = None) -> None:
    from mlflow.entities import Metric, Param, RunTag
    now = int(time.time() * 1000)
    entries = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if names.present(v)]
    # MLflow takes at most 1000 metrics per batch; ImageNet-LT has 1000 classes per probe
    for start in range(0, max(len(entries), 1), 1000):
        first = start == 0
        client.log_batch(run_id, metrics=entries[start:start + 1000],
                         params=[Param(k, str(v)) for k, v in (params or {}).items()] if first else [],
                         tags=[RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()] if first else [])


@functools.lru_cache(maxsize=None)
def varied_keys(study: str) -> frozenset[str]:
    """The config keys a study's sweep sets per trial (what its run names show); cached: the
    rows filled in at a sweep's end ask once per row."""
    from study.studies import STUDIES
    keys = STUDIES[study].searched_keys() if study in STUDIES else {"loss.name", "data.imbalance_ratio", "seed"}
    return frozenset(keys)


def log_dataset(client, run_id: str, config: dict, class_counts, digest: str | None) -> None:
    """Log the trial's train set as the run's dataset input (nothing for a trial without one)."""
    if digest and class_counts is not None and len(class_counts):
        client.log_inputs(run_id, datasets=[dataset_input(config, [int(c) for c in class_counts], digest)])


def log_missing_runs(uri: str, state: dict, rows, sweep_dir: Path, done: set[str]) -> None:
    """Give every row (a DataFrame of load_results) an ended child run, adding each trial id
    to `done` as it is confirmed (the caller may stop waiting half-way). A trial's extra runs
    (a create whose answer was lost, then retried) are deleted, the ended one kept."""
    from analysis.results import load_history
    client = open_client(uri)
    by_trial: dict[str, list] = {}
    for run in child_runs(client, state["experiment_id"], state["parent_run_id"]):
        by_trial.setdefault(run.data.tags.get("trial_id"), []).append(run)
    history = load_history(sweep_dir)
    for row in rows.to_dict("records"):
        runs = sorted(by_trial.get(row["trial_id"], []), key=lambda r: r.info.status not in ENDED)
        for extra in runs[1:]:
            client.set_tag(extra.info.run_id, "duplicate", f"a second run of trial {row['trial_id']}")
            client.delete_run(extra.info.run_id)
        if not runs or runs[0].info.status not in ENDED:
            _log_row(client, state, row, runs[0].info.run_id if runs else None, history, sweep_dir)
        done.add(row["trial_id"])


def _log_row(client, state: dict, row: dict, run_id: str | None, history, sweep_dir: Path) -> None:
    """One trial's run from its row, as the sink would have logged it, and ended."""
    from analysis.results import read_parquet
    trial_id = row["trial_id"]
    config = config_columns({k: row[k] if names.present(row.get(k)) else None for k in flat_keys()})
    if run_id is None:
        versions = json.loads(row.get("versions") or "{}")
        confirm = confirm_tags(row.get(names.CONFIRM_COLUMN))
        run_id = client.create_run(state["experiment_id"], run_name=run_name(config, varied_keys(row["study"]))
                                   + (" confirm" if confirm else ""), tags={
            "mlflow.parentRunId": state["parent_run_id"], "trial_id": trial_id, "study": row["study"],
            "sweep": row["sweep"], "git_commit": row["git_commit"], **confirm,
            **{f"version.{k}": v for k, v in versions.items()}}).info.run_id
        for epoch in (history[history["trial_id"] == trial_id].to_dict("records") if len(history) else []):
            metrics = {k: epoch[k] for k in names.EPOCH_METRICS if k in epoch}    # older history: fewer
            log_batch(client, run_id, metrics, int(epoch[names.EPOCH]))
    selection_file = sweep_dir / "results" / "selection" / f"{trial_id}.parquet"
    selection = read_parquet(selection_file).to_dict("records") if selection_file.exists() else []
    tags = {names.STATUS: row[names.STATUS], "device": row.get("device_used"), "error": row.get("error")}
    step = row.get(names.pretrain_column(names.PRETRAIN_EPOCHS))
    log_dataset(client, run_id, config, row.get("class_counts"), row.get("draw_digest"))
    log_batch(client, run_id, names.row_metrics(row, selection), int(step) if names.present(step) else 0,
               params={k: v for k, v in config.items() if v is not None},
               tags={k: v for k, v in tags.items() if names.present(v)})
    client.set_terminated(run_id, "FAILED" if row[names.STATUS] == "error" else "FINISHED")
