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
    progress = Progress(total=6, objectives=["lt/top1"], results_dir=tmp_path, slots=2, stream=out, clock=clock)
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
    # mean 10 s; b and c free their slots after max(10 - 10, 0) = 0 s (3 running on 2 slots:
    # each running trial is a slot); 6 - 1 old - 1 done - 2 running = 2 waiting take two of
    # them for 10 s
    assert lines[0] == "[0:00:10] done 2  running 2  failed 0  of 6  best lt/top1 0.700  eta 0:00:10"
    # mean (10 + 30) / 2 = 20 s; c (30 s old) frees its slot now, the other slot is free;
    # the 2 waiting take one each for 20 s
    assert lines[1] == "[0:00:30] done 2  running 1  failed 1  of 6  best lt/top1 0.700  eta 0:00:20"


def test_the_eta_does_not_swing_as_trials_start_and_end(tmp_path):
    """12 trials of 60 s on 3 slots, started in a stagger and each replaced at once when it
    ends (as Tune does): the estimate at every end is the true time left, and a trial's start
    does not move it."""
    clock, out = Clock(), io.StringIO()
    progress = Progress(total=12, objectives=[], results_dir=tmp_path, slots=3, stream=out, clock=clock)
    progress.setup()
    ends, started, etas = [], 0, []
    for slot, offset in enumerate((0.0, 20.0, 40.0)):          # slot s runs its trials back to back
        ends += [offset + 60.0 * (k + 1) for k in range(4)]
    trials = {}
    for offset in (0.0, 20.0, 40.0):
        clock.now = offset
        trials[offset] = _trial(f"t{started}")
        progress.on_trial_start(0, [], trials[offset])
        started += 1
    for end in sorted(ends):
        clock.now = end
        slot = end % 60.0
        progress.on_trial_complete(0, [], trials[slot])
        etas.append(progress.eta())
        if started < 12:
            before = progress.eta()
            trials[slot] = _trial(f"t{started}")
            progress.on_trial_start(0, [], trials[slot])
            started += 1
            assert progress.eta() == before                    # a start moves work, not the total
    assert etas == [max(ends) - end for end in sorted(ends)]     # exact: every trial is 60 s
