"""`python -m study.sweep STUDY [options]`: a whole study on Ray Tune.

    parse and validate everything (exit 2 on bad input, before Ray starts)
    -> STUDIES[STUDY]: search space + base config
    -> build_tuner: Tuner(tune_trainable, LevelSearch: an Optuna study per level x cell,
                          callbacks=[MLflow, Parquet, progress])
    -> trainables.trial.run_trial on the workers, one trial each
    -> summary: Pareto-optimal trials per imbalance level, where the results are
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from study import journal
from study.claim import BucketLock, SweepLock
from study.plan import MAX_SEED, SweepPlan, build_plan
from study.checks import (check_address, check_name, check_new_sweep, check_resources, check_storage,
                          create_storage, resolve_storage)
from study.storage import check_remote, first_line, is_remote, mirror_of, stage
from study.studies import STUDIES
from trainables import names
from trainables.data import DATASETS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m study.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", nargs="?", help="one of: " + ", ".join(STUDIES))
    p.add_argument("--list", action="store_true", help="list the studies and exit")
    g = p.add_argument_group("search")
    g.add_argument("--objective", choices=["multi", names.TOP1, names.BALANCEDNESS], default="multi",
                   help="multi (default): maximise top-1 and p(V) together; or one of them")
    g.add_argument("--probe", choices=[names.LT, names.BALANCED], default=names.LT,
                   help="whose metrics are optimised: the long-tailed probe (default) or the balanced one")
    g.add_argument("--imbalance-levels", help="comma-separated ratios, each with an even share "
                   "of the trials and its own Optuna study (default 1,10,100; smoke 1,10)")
    g.add_argument("--imbalance-range", help="LOW:HIGH, Optuna searches the ratio itself (log scale)")
    g.add_argument("--scheduler", choices=["none", "asha", "moasha"], default="none",
                   help="stop weak trials early, judged on the validation kNN monitor: moasha on its "
                   "top-1 and p(V) (multi-objective ASHA), asha on its top-1 (single objective only)")
    g.add_argument("--num-samples", type=int, help="trials in all (grid studies: repeats = seeds)")
    g.add_argument("--epochs", type=int, help="pretraining epochs per trial")
    g.add_argument("--dataset", help="one of " + ", ".join(DATASETS) + " (default shapes)")
    g.add_argument("--data-root", help="where a dataset's files are")
    g.add_argument("--seed", type=int, default=0, help="first trial seed and Optuna's seed")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any trial config key for every trial, e.g. --set probe.epochs=50")
    g.add_argument("--confirm", type=int, metavar="K", help="after the search, re-run every Pareto-optimal "
                   "trial of each level with K new seeds (default 3 on the CPU and GPU budgets, 0 = off; off "
                   "with --smoke and for grid studies)")
    g.add_argument("--smoke", action="store_true", help="a handful of tiny trials: every code path in seconds")
    r = p.add_argument_group("resources")
    r.add_argument("--cpus-per-trial", type=float, default=1.0)
    r.add_argument("--gpus-per-trial", type=float, default=None,
                   help="fractions share a GPU (default: 1 if the cluster has GPUs, else 0)")
    r.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: as resources allow)")
    r.add_argument("--no-reuse-actors", action="store_true",
                   help="a fresh worker process per trial (default: workers keep imports and data)")
    r.add_argument("--max-failures", type=int, default=1,
                   help="retries of a failed trial, each from its last epoch's checkpoint (default 1)")
    r.add_argument("--address", help="auto or HOST:PORT: join an existing Ray cluster (default: start a local one)")
    r.add_argument("--trial-resource", action="append", default=[], metavar="NAME=AMOUNT",
                   help="a custom Ray resource every trial asks for, e.g. worker=1")
    o = p.add_argument_group("output")
    o.add_argument("--storage", default="runs",
                   help="results folder, or a bucket: s3://BUCKET/PREFIX, gs://... (default ./runs)")
    o.add_argument("--name", help="sweep name (default STUDY-<UTC timestamp>)")
    o.add_argument("--mlflow-uri", help="MLflow tracking URI (default sqlite:///STORAGE/mlflow.db; with a "
                   "bucket, ./mlflow.db)")
    o.add_argument("--optuna-storage", metavar="URL", help="the Optuna studies' RDB storage (default "
                   "sqlite:///STORAGE/optuna.db, beside the MLflow store; e.g. a team's postgresql:// URL)")
    o.add_argument("--quiet", action="store_true", help="print only the final summary (stdout), no progress")
    o.add_argument("--resume", metavar="NAME", help="continue the interrupted sweep NAME in --storage")
    return p


def list_studies() -> str:
    return "\n".join(f"{name:8s} {study.description}" for name, study in STUDIES.items())


def git_commit() -> str:
    """HEAD of the checkout the code runs from, '+dirty' when it has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "torchvision", "ray", "optuna", "mlflow", "pyarrow", "pandas"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def validate(args: argparse.Namespace) -> SweepPlan:
    """Everything that can be wrong with the input, checked before Ray starts; the
    storage folder is created last, once everything else holds."""
    if args.study not in STUDIES:
        raise ValueError(f"unknown study {args.study!r}; choose one of {', '.join(STUDIES)} (--list)")
    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed {args.seed}: must be in [0, {MAX_SEED}] (numpy's and torch's seeds)")
    remote = is_remote(args.storage)
    if remote:                                   # a bucket: reachable, writable, in seconds
        check_remote(args.storage)
        storage = args.storage.rstrip("/")
    else:
        storage = resolve_storage(args.storage)
        check_storage(storage)
    check_address(args.address)
    check_resources(args)
    name = args.resume or args.name or f"{args.study}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    check_name(name, storage)
    try:
        folder = stage(storage, name).local if remote else storage / name     # a bucket's: fetched
    except OSError as e:
        raise ValueError(f"--storage {storage}: cannot read the sweep {name} there ({first_line(e)})") from None
    if args.resume and not (folder / "sweep.json").is_file():
        raise ValueError(f"--resume {name}: no sweep of that name in {storage}")
    if not args.resume and folder.exists():
        check_new_sweep(folder)
    from study.optuna_store import check_new_studies, check_optuna_uri
    from study.tracking import check_store, check_uri      # the standard library only: no MLflow
    if args.mlflow_uri is not None:
        check_uri(args.mlflow_uri)               # its form first: the store's probe comes last
    if args.optuna_storage is not None:
        check_optuna_uri(args.optuna_storage)
    plan = build_plan(args, storage, name, str(folder.parent) if remote else "")
    if remote and plan.default_store and os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        raise ValueError("a Ray job with --storage in a bucket: the default MLflow store would be in the job's "
                         "working directory, which Ray deletes; name one with --mlflow-uri (a tracking server)")
    # reachable (a server probed for seconds, not MLflow's minutes of retries) and undamaged
    check_store(plan.mlflow_uri)
    check_optuna_uri(plan.optuna_uri)
    if plan.optuna_uri == plan.mlflow_uri:
        raise ValueError(f"--optuna-storage {plan.optuna_uri}: the MLflow store's database too; the two keep "
                         "their schemas' versions in one table each, so give Optuna a database of its own")
    if not args.resume:
        check_new_studies(plan.optuna_uri, name)
    if not remote:
        create_storage(storage)
    return plan


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def configure_environment(address: str | None) -> None:
    """Every process-wide setting the sweep needs, set here once, before Ray is imported
    (Ray and Tune read them at import or start).

    - RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for a local cluster or one at a loopback
      address: Ray replaces a node IP of 127.0.0.1 by the machine's network address and
      binds its servers to every interface; this switch (despite its name, a plain one on
      Linux too) keeps the node IP, and so every server, at 127.0.0.1. It rules out other
      nodes, so a remote --address does not get it.
    - RAY_AUTH_MODE=disabled for the local cluster only: it is this process's own and
      listens on 127.0.0.1 (the line above), and Ray would otherwise warn about its token
      at every start; a cluster joined with --address keeps Ray's token authentication
      (docs/cluster.md). An exported RAY_AUTH_MODE wins.
    - Tune's older console output (RAY_AIR_NEW_OUTPUT=0), which at verbose=0 prints
      nothing: the newer one prints a configuration banner and a TensorBoard hint even
      then. The progress line is ours (study.progress).
    - no usage statistics; objectives only in a trial's final report (Tune's strict
      metric check would want them every epoch);
    - the experiment state (trials, searcher) saved every second rather than Tune's 10 s
      or more: a killed driver then loses at most a second of bookkeeping, and --resume
      neither repeats nor invents trials;
    - MLflow's HTTP requests bounded: 30 s an attempt (MLflow waits 120; a server's
      sqlite store may itself wait 20 s on a lock, and a timed-out create is retried
      and would duplicate its run), 2 retries, short backoff. Only the sink's writer
      thread waits that long; the driver's own calls are bounded again (study.tracking).
    """
    host = None if address is None else address.rsplit(":", 1)[0].strip("[]")
    if address is None or host in LOOPBACK:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")        # with verbose=0: no banner, no TensorBoard hint
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")   # that 1 s
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_environment(args.address)
    if args.list:
        print(list_studies())
        return 0
    if args.study is None:
        parser.error("name a study (--list shows them)")
    try:
        plan = validate(args)
        lock = claim(plan)
    except ValueError as e:
        parser.error(str(e))                      # one line, exit status 2
    from study.runner import run_sweep   # lazy: Ray, Optuna and MLflow import slowly
    command = " ".join(["python -m study.sweep", *(sys.argv[1:] if argv is None else argv)])
    release_on_sigterm(lock)
    try:
        return run_sweep(plan, git_commit(), versions(), command, lambda: release_on_sigterm(lock))
    finally:
        lock.release()


def release_on_sigterm(lock) -> None:
    """`kill` or `ray job stop` (SIGTERM, then SIGKILL after 3 s): give the sweep folder up
    at once, so that a --resume need not wait for the claim to go stale; every row and
    journal line written so far is already on disk (or in the bucket). Installed again
    once Ray started (ray.init installs a handler of its own), and chained to it."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        lock.release()
        if callable(previous):
            previous(signum, frame)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    signal.signal(signal.SIGTERM, handler)


def claim(plan: SweepPlan) -> SweepLock:
    """Claim the sweep folder for this driver (study.claim), then check again, now that no
    other driver can start in it, that a new sweep's folder has no trials."""
    try:
        lock = (BucketLock(mirror_of(plan.sweep_dir)) if plan.remote else SweepLock(plan.sweep_dir)).acquire()
    except OSError as e:
        raise ValueError(f"{plan.where}: cannot claim the sweep folder ({first_line(e)})") from None
    try:
        if plan.remote:                           # what another driver may have written meanwhile
            mirror_of(plan.sweep_dir).fetch((journal.FILE, "results/trials"))
    except OSError as e:
        lock.release()
        raise ValueError(f"{plan.where}: cannot read the sweep folder ({first_line(e)})") from None
    if not plan.resume:
        try:
            check_new_sweep(plan.sweep_dir)
        except ValueError:
            lock.release()
            raise
    return lock


if __name__ == "__main__":
    sys.exit(main())
