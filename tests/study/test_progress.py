"""The progress line's counts and estimate, driven with Tune's own Trial objects."""

import io

from ray.tune.experiment import Trial

from study.progress import Progress


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def _trial(trial_id: str) -> Trial:
    trial = Trial("tune_trainable", trial_id=trial_id, stub=True)
    trial.set_status(Trial.RUNNING)
    return trial


def test_counts_best_values_and_eta(tmp_path):
    clock, out = Clock(), io.StringIO()
    (tmp_path / "trials").mkdir()
    (tmp_path / "trials" / "old.parquet").write_bytes(b"")      # finished before a --resume
    progress = Progress(total=6, objectives=["lt/top1"], results_dir=tmp_path, stream=out, clock=clock)
    progress.setup()
    a, b, c = _trial("a"), _trial("b"), _trial("c")
    for t in (a, b, c):
        progress.on_trial_start(0, [a, b, c], t)
    clock.now = 10.0
    # the adapter's final report: the objectives flattened, and the whole result as JSON
    a.update_last_result({"lt/top1": 0.7, "trial_result": '{"status": "ok", "probes": {"lt": {"top1": 0.7}}}'})
    progress.on_trial_complete(0, [a, b, c], a)
    clock.now = 30.0
    progress.on_trial_error(0, [a, b, c], b)
    lines = out.getvalue().strip().splitlines()
    assert lines[0].startswith("[0:00:10] done 2  running 2  failed 0  of 6  best lt/top1 0.700")
    # durations 10 s and 30 s: mean 20 s; 3 trials left (6 - 2 done - 1 failed), 1 running -> 60 s
    assert lines[1] == "[0:00:30] done 2  running 1  failed 1  of 6  best lt/top1 0.700  eta 0:01:00"
