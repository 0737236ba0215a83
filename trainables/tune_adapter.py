"""The one module in trainables that imports ray.tune: `run_trial` as a Tune
function trainable. Ray's reporting API has moved several times; that churn
stays here.

Per epoch it reports the loop's metrics (loss, knn_acc, ...) with a checkpoint
of the training state; at the end it reports once more with the final metrics
(`names.final_metrics`: "lt/top1", "balanced/balancedness", ...) for the
searcher, and the whole TrialResult as JSON under `names.RESULT_PAYLOAD` for the
driver's sinks. A trial Tune restarts (a killed worker, an error with retries
left) continues from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from trainables import names
from trainables.config import TrialConfig
from trainables.faults import inject
from trainables.trial import run_trial

STATE_FILE = "state.pt"


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
    if "://" in folder:                    # in a bucket (a sweep with --storage s3://...)
        import io

        from pyarrow import fs
        filesystem, path = fs.FileSystem.from_uri(folder.rstrip("/") + "/" + STATE_FILE)
        with filesystem.open_input_stream(path) as f:
            return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


def _resume_state(config: dict) -> dict | None:
    """The state to continue from: this trial's own last checkpoint (Tune restarted it),
    else the checkpoint of the trial it continues after a --resume (study.journal), else None."""
    from ray import tune
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            return load_state(folder)
    if config.get(names.FROM_CHECKPOINT):
        return load_state(config[names.FROM_CHECKPOINT])
    return None


def tune_trainable(config: dict) -> None:
    """Tune function trainable: config is the flat dotted trial config.

    The last epoch's report is held back and sent together with the final
    metrics: a scheduler (ASHA) stops a trial on its last epoch's report, and
    Tune drops whatever that trial reports after it. The reports of the epochs in
    config[names.PROBE_AT] (MO-ASHA's rungs) carry the trial's result as if it
    stopped there, which is what the driver's sinks record if it does.
    """
    from ray import tune

    # This worker, kept for the next trial (actor reuse), will first wait this long for
    # this trial's thread; a scheduler's stop ends it at its report, which Ray's 2 s can
    # miss on a loaded machine, and a reset that times out drops the next trial unrecorded.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    cfg = TrialConfig.from_flat(names.trial_config(config))
    trial_id = tune.get_context().get_trial_id()
    resume = _resume_state(config)
    last_epoch: dict = {}

    def report(metrics: dict, state) -> None:
        last_epoch.clear()
        last_epoch.update(metrics)
        if metrics[names.EPOCH] < cfg.optim.epochs:
            with tempfile.TemporaryDirectory() as folder:
                save_state(state(), folder)          # Tune copies the folder before returning
                tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(folder))
        inject(config, metrics[names.EPOCH], trial_id)

    try:
        result = run_trial(cfg, report, resume, probe_at=set(config.get(names.PROBE_AT) or ()))
    finally:
        release_device_memory()
    payload = result.to_dict()
    tune.report({**last_epoch, **names.final_metrics(payload), names.STATUS: result.status,
                 names.RESULT_PAYLOAD: json.dumps(payload)})
