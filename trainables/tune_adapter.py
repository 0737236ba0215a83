"""The one module in trainables that imports ray.tune: `run_trial` as a Tune
function trainable. Ray's reporting API has moved several times; that churn
stays here.

Per epoch it reports the loop's metrics (loss, knn_acc, ...) with a checkpoint
of the training state; at the end it reports once more with the final metrics
flattened as "<probe>/<metric>" (e.g. "lt/top1", "balanced/balancedness") for
the searcher, and the whole TrialResult as JSON under "trial_result" for the
driver's sinks. A trial Tune restarts (a killed worker, an error with retries
left) continues from its last checkpoint.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from trainables.config import TrialConfig
from trainables.faults import inject
from trainables.trial import TrialResult, run_trial

SCALAR_PROBE_METRICS = ("top1", "many", "medium", "few", "balancedness", "acc_std", "worst_class_acc")
STATE_FILE = "state.pt"


def final_metrics(result: TrialResult) -> dict[str, float]:
    """The scalar end-of-trial metrics, "<probe>/<metric>"; none for a diverged trial,
    so that a searcher never learns from made-up values."""
    out = {f"{probe}/{name}": metrics[name]
           for probe, metrics in result.probes.items() for name in SCALAR_PROBE_METRICS
           if not (isinstance(metrics[name], float) and math.isnan(metrics[name]))}
    # the select study's objectives: per strategy, the mean over budgets
    for name in {row["strategy"] for row in result.selection}:
        rows = [row for row in result.selection if row["strategy"] == name]
        out.update({f"select/{name}/{m}": sum(r[m] for r in rows) / len(rows) for m in ("top1", "entropy")})
    out["wall_time_s"] = result.wall_time_s
    return out


def release_device_memory() -> None:
    """Give the GPU memory a finished trial cached back to the device: with actor reuse
    (and fractional GPUs) the next trial on this worker, or a trial on another worker
    sharing the GPU, needs it."""
    import gc

    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def save_state(state: dict, folder: str) -> None:
    import torch
    torch.save(state, Path(folder) / STATE_FILE)


def load_state(folder: str) -> dict:
    """A checkpoint's training state: tensors, numbers, lists and dicts only, read
    with weights_only=True (no pickled code runs), onto the CPU."""
    import torch
    return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


def tune_trainable(config: dict) -> None:
    """Tune function trainable: config is the flat dotted trial config.

    The last epoch's report is held back and sent together with the final
    metrics: a scheduler (ASHA) stops a trial on its last epoch's report, and
    Tune drops whatever that trial reports after it.
    """
    from ray import tune

    cfg = TrialConfig.from_flat(config)
    trial_id = tune.get_context().get_trial_id()
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_state(folder)
    last_epoch: dict = {}

    def report(metrics: dict, state) -> None:
        last_epoch.clear()
        last_epoch.update(metrics)
        if metrics["epoch"] < cfg.optim.epochs:
            with tempfile.TemporaryDirectory() as folder:
                save_state(state(), folder)          # Tune copies the folder before returning
                tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(folder))
        inject(config, metrics["epoch"], trial_id)

    try:
        result = run_trial(cfg, report, resume)
    finally:
        release_device_memory()
    tune.report({**last_epoch, **final_metrics(result), "status": result.status,
                 "trial_result": json.dumps(result.to_dict())})
