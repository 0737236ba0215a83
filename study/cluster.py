"""The Ray cluster a sweep runs on: a private local one or one joined with --address,
and what is checked once joined (resources, the data root where trials run)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from study.plan import Refused, SweepPlan


def trial_gpus(plan: SweepPlan) -> float:
    """GPUs per trial: as asked, else 1 if the cluster has any GPU."""
    import ray
    if plan.gpus_per_trial is not None:
        return plan.gpus_per_trial
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def start_ray(address: str | None) -> None:
    """Join the cluster at `address`, or start a private local one ("local": never
    attach by accident to a cluster someone started on this machine)."""
    import ray
    if ray.is_initialized():                     # a test session's, or a caller's
        return
    runtime_env = None
    # A Ray job's own runtime env (--working-dir) already ships the packages, and giving
    # ray.init another one releases the job's working directory, the driver's cwd, which
    # Ray then deletes.
    if address is not None and not os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        # Workers on other nodes import the project from what the driver ships (as
        # folders: a job's own runtime env is merged with this one by deep copy, which
        # module objects do not survive).
        import analysis
        import search_spaces
        import study
        import trainables
        runtime_env = {"py_modules": [str(Path(m.__file__).parent) for m in (trainables, study, search_spaces,
                                                                               analysis)]}
    # A local cluster listens on the loopback address only: nothing of it is reachable
    # from the network (the dashboard is off).
    local = {"_node_ip_address": "127.0.0.1"} if address is None else {}
    ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False, configure_logging=True, runtime_env=runtime_env, **local)


def check_cluster(plan: SweepPlan) -> None:
    """A trial needs its CPUs and GPUs on one node; refuse what no node of the cluster has
    (Ray would keep the trial pending forever)."""
    import ray
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    ask = trial_ask(plan)
    if any(all(n.get(k, 0) >= v for k, v in ask.items()) for n in nodes):
        return
    have = "; ".join(_amounts({k: n.get(k, 0) for k in ask}) for n in nodes) or "no nodes"
    raise Refused(f"a trial asks for {_amounts(ask)} on one node; the cluster's nodes have {have}")


def trial_ask(plan: SweepPlan) -> dict:
    """The resources one trial asks for: its CPUs, GPUs and custom resources."""
    return {"CPU": plan.cpus_per_trial, "GPU": trial_gpus(plan), **plan.trial_resources}


def trial_slots(plan: SweepPlan) -> int:
    """How many trials the cluster runs at once: on each live node, how many times a trial's
    resources fit; at most --max-concurrent."""
    import ray
    ask = {k: v for k, v in trial_ask(plan).items() if v > 0}
    fits = sum(min(int(n["Resources"].get(k, 0) / v + 1e-9) for k, v in ask.items())
               for n in ray.nodes() if n.get("Alive"))
    return max(1, min(fits, plan.max_concurrent or fits))


def _amounts(resources: dict) -> str:
    """{"CPU": 3, "GPU": 0, "worker": 1} -> "3 CPUs, 0 GPUs and 1 worker"."""
    parts = [f"{v:g} {k + 's' if k in ('CPU', 'GPU') else k}" for k, v in resources.items()]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


DATA_CHECK_S = 120.0          # the most the data check may wait for a node and load the data


def check_data_on_workers(plan: SweepPlan) -> None:
    """With --address, trials read --data-root on the nodes they run on, which need not be
    the driver's: a task with a trial's resources checks there that the root exists and
    holds the dataset (every trial config's data is planned, as validation does locally),
    and the sweep is refused with one line if not."""
    from trainables.data import DATASETS
    if plan.address is None or DATASETS[plan.base["data.dataset"]].needs_root is None:
        return
    import ray
    from ray.exceptions import GetTimeoutError
    task = ray.remote(_check_data).options(num_cpus=plan.cpus_per_trial, num_gpus=trial_gpus(plan),
                                           resources=plan.trial_resources or None, max_retries=0)
    ref = task.remote(plan.study, plan.base, plan.levels or list(plan.ratio_range), plan.seed, plan.scheduler)
    try:
        node, error = ray.get(ref, timeout=DATA_CHECK_S)
    except GetTimeoutError:
        ray.cancel(ref, force=True)
        raise Refused(f"no node of the cluster ran the data check within {DATA_CHECK_S:g} s (are its trial "
                      "resources free?)") from None
    if error:
        raise Refused(f"--data-root {plan.base['data.data_root']} on node {node}: {error}")


def _check_data(study: str, base: dict, ratios: list[float], seed: int,
                scheduler: str = "none") -> tuple[str, str | None]:
    """(this node's IP and id, None or the one-line reason its data cannot serve the sweep,
    a scheduler's missing validation set included)."""
    import ray

    from study.config_checks import check_trial_configs, check_validation_set
    from study.studies import STUDIES
    context = ray.get_runtime_context()
    node = f"{ray.util.get_node_ip_address()} ({context.get_node_id()[:12]})"
    try:
        cfg = check_trial_configs(STUDIES[study], base, ratios, seed)
        if cfg is not None:
            check_validation_set(scheduler, cfg)
    except ValueError as e:
        return node, (str(e).splitlines() or ["invalid"])[0][:300]
    return node, None
