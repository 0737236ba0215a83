"""Run a planned sweep: Ray, the Tuner, the driver-side sinks, and the summary."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from study.plan import SweepPlan
from study.studies import STUDIES
from trainables import names


def build_tuner(plan: SweepPlan, callbacks: list):
    """Tuner(tune_trainable, search per imbalance level or a grid, callbacks)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from study.searcher import LevelSearch

    study = STUDIES[plan.study]
    param_space = {**plan.base, "seed": plan.seed}
    search_alg, num_samples = None, plan.num_samples
    if study.space is None:                      # a grid: every combination, seeds repeated
        param_space.update({k: tune.grid_search(v) for k, v in study.grid.items()})
        param_space["data.imbalance_ratio"] = tune.grid_search(plan.levels)
        param_space["seed"] = tune.grid_search([plan.seed + i for i in range(plan.seeds)])
        num_samples = 1
    else:
        search_alg = LevelSearch(study.space, plan.objectives, plan.levels, plan.seed, plan.ratio_range,
                                 study.cell_configs() if study.cells else None)
    scheduler = None
    if plan.scheduler == "asha":
        scheduler = ASHAScheduler(metric=names.KNN_ACC, mode="max", time_attr=names.EPOCH, max_t=plan.epochs,
                                  grace_period=max(1, plan.epochs // 4))
    return tune.Tuner(
        _trainable(plan), param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                    max_concurrent_trials=plan.max_concurrent,
                                    # A worker keeps its imports and its loaded dataset across
                                    # trials (trainables.data caches per process).
                                    reuse_actors=plan.reuse_actors,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=plan.name, storage_path=plan.storage, callbacks=callbacks,
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=plan.max_failures),
                                  # the newest checkpoint resumes a trial; one older survives a
                                  # crash while the newest is being written
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))


def trial_dirname(trial) -> str:
    """Short trial folders: Ray's default packs the whole config into the name."""
    return f"trial_{trial.trial_id}"


def _trainable(plan: SweepPlan):
    """The Tune adapter with the plan's resources (GPU: as asked, else 1 if the cluster has any)."""
    import ray
    from ray import tune

    from trainables.tune_adapter import tune_trainable
    gpus = plan.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return tune.with_resources(tune_trainable, {"cpu": plan.cpus_per_trial, "gpu": gpus})


def start_ray(address: str | None) -> None:
    """Join the cluster at `address`, or start a private local one ("local": never
    attach by accident to a cluster someone started on this machine)."""
    import ray
    if ray.is_initialized():                     # a test session's, or a caller's
        return
    runtime_env = None
    if address is not None:
        # Workers on other nodes import the project from what the driver ships.
        import analysis
        import search_spaces
        import study
        import trainables
        runtime_env = {"py_modules": [trainables, study, search_spaces, analysis]}
    # A local cluster listens on the loopback address only: nothing of it is reachable
    # from the network (the dashboard is off).
    local = {"_node_ip_address": "127.0.0.1"} if address is None else {}
    ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False, configure_logging=True, runtime_env=runtime_env, **local)


def total_trials(plan: SweepPlan) -> int:
    study = STUDIES[plan.study]
    if study.space is None:
        combos = 1
        for values in study.grid.values():
            combos *= len(values)
        return combos * len(plan.levels) * plan.seeds
    return plan.num_samples


def open_tracking(plan: SweepPlan, commit: str, command: str) -> dict:
    """Create the study's MLflow experiment and the sweep's parent run, once, in the
    driver; record their ids in mlflow.json for --resume."""
    from study.mlflow_sink import start_parent_run
    experiment_id, parent = start_parent_run(plan.mlflow_uri, plan.study, plan.name,
                                             {"git_commit": commit, "command": command},
                                             Path(plan.storage) / "mlartifacts")
    state = {"experiment_id": experiment_id, "parent_run_id": parent}
    (plan.sweep_dir / "mlflow.json").write_text(json.dumps(state))
    return state


def set_aside_unknown_rows(plan: SweepPlan, known: set[str]) -> None:
    """Move the rows of trials the experiment does not know to results/orphaned/.

    A trial that started and finished between two saves of the experiment state,
    and was then lost with a killed driver, has written its row; the resumed search
    never knew it and ran another trial in its place. Its files are kept, beside
    the results rather than in them, so that rows match the sweep's trials."""
    rows = [f for f in plan.results_dir.glob("trials/[!.]*.parquet") if f.stem not in known]
    for row in rows:
        for kind in ("trials", "history", "selection"):
            path = plan.results_dir / kind / f"{row.stem}.parquet"
            if path.exists():
                (plan.results_dir / "orphaned" / kind).mkdir(parents=True, exist_ok=True)
                path.rename(plan.results_dir / "orphaned" / kind / path.name)
    if rows:
        print(f"set aside {len(rows)} row(s) of trials lost with the killed driver and replaced by the "
              f"resumed search: {plan.results_dir / 'orphaned'}")


def _start(plan: SweepPlan, commit: str, versions: dict, command: str):
    """A new sweep: save the plan, open MLflow while Ray starts, run the Tuner.
    Returns (result grid, MLflow ids)."""
    from study.mlflow_sink import MlflowSink
    from study.parquet_sink import ParquetSink
    from study.progress import Progress
    plan.save()
    with ThreadPoolExecutor(1) as pool:
        # Creating a new store takes seconds; it overlaps Ray's start (Tune pickles the
        # sink when it builds the Tuner, which waits for the store). No trial is logged early.
        tracking = pool.submit(open_tracking, plan, commit, command)
        start_ray(plan.address)
        provenance = {"study": plan.study, "sweep": plan.name, "git_commit": commit, "versions": versions}
        callbacks = [MlflowSink(plan.mlflow_uri, tracking, provenance),
                     ParquetSink(plan.results_dir, provenance),
                     Progress(total_trials(plan), plan.objectives, plan.results_dir)]
        print(f"sweep {plan.name}: {total_trials(plan)} trials of {plan.study} -> {plan.sweep_dir}", flush=True)
        grid = build_tuner(plan, callbacks).fit()
        return grid, tracking.result()


def _resume(plan: SweepPlan):
    """Continue a sweep from Tune's saved experiment; its callbacks come back with it."""
    from ray import tune
    start_ray(plan.address)
    print(f"resuming {plan.name} in {plan.sweep_dir}", flush=True)
    tuner = tune.Tuner.restore(str(plan.sweep_dir), trainable=_trainable(plan),
                               resume_unfinished=True, resume_errored=False)
    return tuner.fit(), json.loads((plan.sweep_dir / "mlflow.json").read_text())


def written_trials(plan: SweepPlan) -> set[str]:
    return {f.stem for f in plan.results_dir.glob("trials/*.parquet") if not f.name.startswith(".")}


def _finish(plan: SweepPlan, state: dict) -> int:
    """Summary, report and the parent run's end; 130 if trials are missing (Ctrl-C),
    1 if none finished ok, else 0."""
    from analysis.report import write_report
    from study.mlflow_sink import attach_folder, drop_orphan_runs, end_parent_run
    from study.summary import summarize_sweep
    ok, written = summarize_sweep(plan), written_trials(plan)
    if len(written) < total_trials(plan):         # interrupted (Ctrl-C): fit() returns normally
        print(f"\ninterrupted after {len(written)} of {total_trials(plan)} trials; continue with:\n"
              f"  python -m study.sweep {plan.study} --resume {plan.name} --storage {plan.storage}")
        return 130
    orphans = drop_orphan_runs(plan.mlflow_uri, state["experiment_id"], state["parent_run_id"], written)
    if orphans:
        print(f"MLflow: deleted {len(orphans)} run(s) of trials lost with the killed driver "
              f"({', '.join(orphans)}); the resumed search replaced them")
    if ok:
        report = write_report(plan.sweep_dir, plan.sweep_dir / "report").parent
        attach_folder(plan.mlflow_uri, state["parent_run_id"], report, "report")
        print(f"report:            {report / 'report.md'} (attached to the sweep's MLflow run)")
    end_parent_run(plan.mlflow_uri, state["parent_run_id"], "FINISHED" if ok else "FAILED")
    return 0 if ok else 1


def run_sweep(plan: SweepPlan, commit: str, versions: dict, command: str) -> int:
    """Run (or resume) the sweep, then _finish. The process environment was set by
    study.sweep.configure_environment before Ray was imported."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # one line per trial is ours to print
    grid, state = _resume(plan) if plan.resume else _start(plan, commit, versions, command)
    set_aside_unknown_rows(plan, {Path(r.path).name.removeprefix("trial_") for r in grid})
    return _finish(plan, state)
