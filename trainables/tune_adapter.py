"""The one module in trainables that imports ray.tune: `run_trial` as a Tune
function trainable. Ray's reporting API has moved several times; that churn
stays here.

Per epoch it reports the loop's metrics (loss, knn_acc, ...); at the end it
reports once more with the final metrics flattened as "<probe>/<metric>"
(e.g. "lt/top1", "balanced/balancedness") for the searcher, and the whole
TrialResult as JSON under "trial_result" for the driver's sinks.
"""

from __future__ import annotations

import json
import math

from trainables.config import TrialConfig
from trainables.trial import TrialResult, run_trial

SCALAR_PROBE_METRICS = ("top1", "many", "medium", "few", "balancedness", "acc_std", "worst_class_acc")


def final_metrics(result: TrialResult) -> dict[str, float]:
    """The scalar end-of-trial metrics, "<probe>/<metric>"; none for a diverged trial,
    so that a searcher never learns from made-up values."""
    out = {f"{probe}/{name}": metrics[name]
           for probe, metrics in result.probes.items() for name in SCALAR_PROBE_METRICS
           if not (isinstance(metrics[name], float) and math.isnan(metrics[name]))}
    out["wall_time_s"] = result.wall_time_s
    return out


def tune_trainable(config: dict) -> None:
    """Tune function trainable: config is the flat dotted trial config.

    The last epoch's report is held back and sent together with the final
    metrics: a scheduler (ASHA) stops a trial on its last epoch's report, and
    Tune drops whatever that trial reports after it.
    """
    from ray import tune

    cfg = TrialConfig.from_flat(config)
    last_epoch: dict = {}

    def report(metrics: dict) -> None:
        last_epoch.clear()
        last_epoch.update(metrics)
        if metrics["epoch"] < cfg.optim.epochs:
            tune.report(dict(metrics))

    result = run_trial(cfg, report)
    tune.report({**last_epoch, **final_metrics(result), "status": result.status,
                 "trial_result": json.dumps(result.to_dict())})
