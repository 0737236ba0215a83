"""Run a planned sweep: Ray, the Tuner, the driver-side sinks, and the summary."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from study import journal
from study.cluster import check_cluster, check_data_on_workers, start_ray, trial_gpus, trial_slots
from study.plan import Refused, SweepPlan, store_folder
from study.relocate import follow_move, forget_foreign_ids
from study.storage import first_line, join, mirror_of, publish, tune_storage
from study.studies import STUDIES
from trainables import names


def build_search(plan: SweepPlan, resumed: journal.Resumed | None, commit: str = "unknown"):
    """The sweep's searcher (a grid, or an Optuna study per level x cell in the plan's
    Optuna storage), writing the journal; after a --resume, continued from the journal,
    the rows and the studies."""
    from study.searcher import GridSearch, LevelSearch, StudyTaken
    study, file = STUDIES[plan.study], plan.sweep_dir / journal.FILE
    if study.space is None:                      # a grid: every combination, seeds repeated
        search = GridSearch(study.grid, plan.levels, [plan.seed + i for i in range(plan.seeds)], file)
    else:
        try:
            search = LevelSearch(study.space, plan.objectives, plan.levels, plan.seed, plan.ratio_range,
                                 study.cell_configs() if study.cells else None, journal_file=file,
                                 storage=optuna_storage(plan), sweep=plan.name,
                                 attrs={"study": plan.study, "sweep": plan.name, "sweep_id": plan.sweep_id,
                                        "git_commit": commit})
        except StudyTaken as e:
            raise Refused(str(e)) from None
    if resumed is not None:
        search.resume(resumed)
    return search


def optuna_storage(plan: SweepPlan):
    """The plan's Optuna storage, opened; Refused (one line) if the database refuses."""
    from study.optuna_store import open_storage
    try:
        return open_storage(plan.optuna_uri)
    except Exception as e:                        # SQLAlchemy's and the drivers' errors are many
        raise Refused(f"Optuna storage {plan.optuna_uri}: cannot open it "
                      f"({str(e).splitlines()[0][:300] or type(e).__name__})") from None


def build_tuner(plan: SweepPlan, callbacks: list, resumed: journal.Resumed | None = None,
                commit: str = "unknown"):
    """Tuner(tune_trainable, the sweep's searcher, callbacks) for the search trials still to
    run (`resumed`: the search's part of the journal, journal.Resumed.part)."""
    scheduler, rungs = build_scheduler(plan, resumed)
    return make_tuner(plan, callbacks, build_search(plan, resumed, commit), trials_left(plan, resumed),
                      scheduler, {names.PROBE_AT: rungs} if rungs else {})


def make_tuner(plan: SweepPlan, callbacks: list, search_alg, num_samples: int, scheduler=None,
               extra: dict | None = None):
    """A Tuner of the sweep's experiment (its folder, checkpoints and failure policy) that runs
    `num_samples` trials of `search_alg` (the search, or study.confirm's confirmations)."""
    from ray import tune

    storage_path, filesystem = tune_storage(plan.storage)     # a bucket: Tune writes there directly
    return tune.Tuner(
        _trainable(plan), param_space={**plan.base, "seed": plan.seed, **(extra or {})},
        tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                    max_concurrent_trials=plan.max_concurrent,
                                    # A worker keeps its imports and its loaded dataset across
                                    # trials (trainables.data caches per process).
                                    reuse_actors=plan.reuse_actors,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=plan.name, storage_path=storage_path, storage_filesystem=filesystem,
                                  callbacks=callbacks,
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=plan.max_failures),
                                  # the newest checkpoint resumes a trial; one older survives a
                                  # crash while the newest is being written
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))


def build_scheduler(plan: SweepPlan, resumed: journal.Resumed | None = None):
    """(the Tune scheduler or None, the rung epochs where trials run their probes early so
    that a trial stopped there has its test metrics: names.PROBE_AT). A resumed sweep's
    MO-ASHA starts from the rungs its trials' history rebuilds."""
    from ray.tune.schedulers import ASHAScheduler

    from study.moasha import ETA, MOASHA, default_grace, milestones
    if plan.scheduler == "moasha":
        grace = default_grace(plan.epochs, ETA)
        scheduler = MOASHA(plan.epochs, grace, ETA)
        if resumed is not None:
            scheduler.replay_history(plan.sweep_dir)
        return scheduler, milestones(plan.epochs, grace, ETA)
    if plan.scheduler == "asha":
        grace = max(1, plan.epochs // 4)
        return (ASHAScheduler(metric=names.KNN_ACC, mode="max", time_attr=names.EPOCH, max_t=plan.epochs,
                              grace_period=grace, reduction_factor=4), milestones(plan.epochs, grace, 4))
    return None, []


def trial_dirname(trial) -> str:
    """Short trial folders: Ray's default packs the whole config into the name."""
    return f"trial_{trial.trial_id}"


def _trainable(plan: SweepPlan):
    """The Tune adapter with the plan's resources (GPU: as asked, else 1 if the cluster has any)."""
    from ray import tune

    from trainables.tune_adapter import tune_trainable
    return tune.with_resources(tune_trainable, {"cpu": plan.cpus_per_trial, "gpu": trial_gpus(plan),
                                                **plan.trial_resources})


def total_trials(plan: SweepPlan) -> int:
    study = STUDIES[plan.study]
    if study.space is None:
        combos = 1
        for values in study.grid.values():
            combos *= len(values)
        return combos * len(plan.levels) * plan.seeds
    return plan.num_samples


def trials_left(plan: SweepPlan, resumed: journal.Resumed | None) -> int:
    """Search trials Tune still has to run: all, or those without a row after a --resume
    (`resumed`: the search's part of the journal)."""
    return total_trials(plan) - (len(resumed.done) if resumed else 0)


OPEN_S = 180.0           # the most opening MLflow may take (a store another sweep is creating)


def open_tracking(plan: SweepPlan, commit: str, command: str) -> dict:
    """Create the study's MLflow experiment and the sweep's parent run, once, in the
    driver; record their ids in mlflow.json for --resume."""
    from study.mlflow_store import end_parent_run, start_parent_run
    from study.tracking import bounded
    earlier = plan.sweep_dir / "mlflow.json"
    if earlier.exists() and not plan.resume:
        # this --name's earlier sweep failed before its first trial: its parent run ends
        # FAILED rather than RUNNING forever (best effort; it may be in another store)
        try:
            bounded(end_parent_run, plan.mlflow_uri, json.loads(earlier.read_text())["parent_run_id"],
                    "FAILED", timeout=30)
        except Exception:
            pass
    try:
        experiment_id, parent = bounded(start_parent_run, plan.mlflow_uri, plan.study, plan.name,
                                        {"git_commit": commit, "command": command},
                                        store_folder(plan.storage) / "mlartifacts", STUDIES[plan.study].question,
                                        timeout=OPEN_S)
    except Exception as e:                        # MLflow refused or did not answer: one line
        raise Refused(f"MLflow at {plan.mlflow_uri}: cannot open the sweep's run "
                      f"({str(e).splitlines()[0][:300] or type(e).__name__})") from None
    state = {"experiment_id": experiment_id, "parent_run_id": parent}
    (plan.sweep_dir / "mlflow.json").write_text(json.dumps(state))
    publish(plan.sweep_dir / "mlflow.json")
    return state


def _run(plan: SweepPlan, commit: str, versions: dict, command: str, on_ray_start=None) -> dict:
    """Run the sweep's trials, a new sweep's or those a resumed one still lacks: open
    MLflow while Ray starts, then the Tuner. Returns the MLflow ids.

    A resumed sweep is rebuilt from its journal, rows and checkpoints (study.journal),
    never from what Ray pickled into the sweep folder."""
    from study.mlflow_sink import MlflowSink
    from study.parquet_sink import ParquetSink
    from study.progress import Progress
    from study.summary import where_to_look
    resumed = journal.resume_state(plan.sweep_dir, plan.objectives, checkpoints_at(plan)) if plan.resume else None
    search = resumed.part(confirmations=False) if resumed else None
    if resumed is None:
        plan.save()
    elif plan.remote:                             # the store is not in the bucket: is it this sweep's?
        if plan.default_store:
            forget_foreign_ids(plan.sweep_dir, store_folder(plan.storage) / "mlflow.db")
    else:
        follow_move(plan.sweep_dir, Path(plan.storage), None if plan.default_store else plan.mlflow_uri)
    with ThreadPoolExecutor(1) as pool:
        # Creating a new store takes seconds; it overlaps Ray's start (Tune pickles the
        # sink when it builds the Tuner, which waits for the store). No trial is logged early.
        # (a sweep that failed before MLflow was opened has no ids to resume with: open it now)
        ids = plan.sweep_dir / "mlflow.json"
        tracking = (pool.submit(json.loads, ids.read_text()) if resumed and ids.exists() else
                    pool.submit(open_tracking, plan, commit, command))
        start_ray(plan.address)
        if on_ray_start is not None:
            on_ray_start()                        # the driver's SIGTERM handler, after Ray's own
        check_cluster(plan)
        check_data_on_workers(plan)
        provenance = {"study": plan.study, "sweep": plan.name, "git_commit": commit, "versions": versions}
        callbacks = [MlflowSink(plan.mlflow_uri, tracking, provenance), ParquetSink(plan.results_dir, provenance)]
        left = trials_left(plan, search)
        progress = [] if plan.quiet else [Progress(total_trials(plan), plan.objectives, plan.results_dir,
                                                   trial_slots(plan))]
        if not plan.quiet:                        # progress on stderr: stdout is the summary's
            verb = "resuming" if resumed else "sweep"
            print(f"{verb} {plan.name}: {left} of {total_trials(plan)} trials of {plan.study} -> {plan.where}\n"
                  f"{where_to_look(plan)}", file=sys.stderr, flush=True)
        if left:
            build_tuner(plan, callbacks + progress, search, commit).fit()
        elif search is not None:
            build_search(plan, search, commit)    # no trial left: the studies still hear every row
        if plan.confirm:
            from study.confirm import run_confirmations
            run_confirmations(plan, callbacks)
        return tracking.result()


def checkpoints_at(plan: SweepPlan) -> str:
    """Where Tune keeps the sweep's trial folders: the sweep folder, or in the bucket."""
    return join(plan.storage, plan.name) if plan.remote else str(plan.sweep_dir)


def publish_rest(plan: SweepPlan, report: Path | None) -> None:
    """A bucket's sweep: the compacted files and the report (the rows went as they were
    written), and again whatever failed before; say what the bucket still lacks."""
    mirror = mirror_of(plan.sweep_dir)
    for file in plan.results_dir.glob("*.parquet"):
        mirror.publish(file)
    if report:
        mirror.publish_tree(report)
    left = mirror.sync()
    if left:
        print(f"warning: {len(left)} file(s) could not be published to {plan.where}; they stay in "
              f"{plan.sweep_dir} until they are", file=sys.stderr)


def written_trials(plan: SweepPlan) -> set[str]:
    return {f.stem for f in plan.results_dir.glob("trials/*.parquet") if not f.name.startswith(".")}


def _finish(plan: SweepPlan, state: dict) -> int:
    """Summary, report, MLflow made to match the rows, and the parent run's end; 130 if
    trials are missing (Ctrl-C), 1 if none finished ok, else 0. MLflow never changes the
    exit status and never holds the driver unboundedly: the Parquet rows are the record,
    and runs MLflow could not take are counted and left for a later --resume."""
    from analysis.report import write_report
    from analysis.results import compact
    from study.mlflow_sink import close_sinks, reconcile
    from study.mlflow_store import attach_folder, describe_run, drop_orphan_runs, end_parent_run
    from study.summary import parent_description, summarize_sweep
    from study.tracking import bounded
    from study.confirm import expected_trials
    ok, written, expected = summarize_sweep(plan), written_trials(plan), expected_trials(plan)
    resume = f"python -m study.sweep {plan.study} --resume {plan.name} --storage {plan.storage}"
    if len(written) < expected:                   # interrupted (Ctrl-C): fit() returns normally
        close_sinks(5.0)                          # queued writes, briefly: the resume reconciles the rest
        print(f"\ninterrupted after {len(written)} of {expected} trials; continue with:\n  {resume}")
        return 130
    compact(plan.sweep_dir)                       # one file per kind: fast loads and reports
    report = write_report(plan.sweep_dir, plan.sweep_dir / "report").parent if ok else None
    if plan.remote:
        publish_rest(plan, report)
    uri, parent, attached = plan.mlflow_uri, state["parent_run_id"], False
    try:                                          # a description MLflow refuses costs only itself
        bounded(describe_run, uri, parent, parent_description(plan), timeout=120)
    except Exception as e:
        print(f"MLflow at {uri}: the parent run's description was not set ({first_line(e)[:300]})",
              file=sys.stderr)
    try:
        missing = reconcile(uri, state, plan.sweep_dir)
        if missing:
            raise RuntimeError(f"rows are complete in Parquet ({plan.where}/results); {missing} run(s) "
                               "missing in MLflow")
        orphans = bounded(drop_orphan_runs, uri, state["experiment_id"], parent, written, timeout=120)
        if orphans:
            print(f"MLflow: deleted {len(orphans)} run(s) of trials the resume continued under new ids "
                  f"({', '.join(orphans)}; journal.jsonl says which)")
        if report:
            attached = bounded(attach_folder, uri, parent, report, "report", timeout=120) or True
        bounded(end_parent_run, uri, parent, "FINISHED" if ok else "FAILED", timeout=120)
    except Exception as e:                        # MLflow away or refusing: one line, no traceback
        print(f"MLflow at {uri}: {str(e).splitlines()[0][:300]}; once it is reachable, `{resume}` "
              "brings it up to date")
    if report:
        where = join(plan.storage, plan.name, "report", "report.md") if plan.remote else report / "report.md"
        print(f"report:            {where}"
              + (" (attached to the sweep's MLflow run)" if attached else ""))
    return 0 if ok else 1


def run_sweep(plan: SweepPlan, commit: str, versions: dict, command: str, on_ray_start=None) -> int:
    """Run (or resume) the sweep, then _finish. The process environment was set by
    study.sweep.configure_environment before Ray was imported."""
    from study.progress import quiet_libraries
    quiet_libraries()
    try:
        state = _run(plan, commit, versions, command, on_ray_start)
    except (Refused, journal.Damaged) as e:
        print(f"python -m study.sweep: error: {e}", file=sys.stderr)
        return 2
    return _finish(plan, state)
