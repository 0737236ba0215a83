"""A one-line live progress display, in place of Ray's wide tables."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ray.tune import Callback

from study.parquet_sink import final_result
from trainables import names


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress(Callback):
    """Prints `done/running/failed/total, best per objective, elapsed, eta` when a
    trial ends and at most every `every` seconds while trials run."""

    def __init__(self, total: int, objectives: list[str], results_dir: Path, every: float = 30.0,
                 stream=sys.stdout, clock=time.monotonic):
        self.clock = clock
        self.total, self.objectives, self.every, self.stream = total, objectives, every, stream
        self.results_dir = Path(results_dir)
        self.prior = 0                  # trials finished before a --resume
        self.start = self.last = self.clock()
        self.best: dict[str, float] = {}
        # Own counts: Tune updates a trial's status only after its callbacks ran.
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.started: dict[str, float] = {}
        self.durations: list[float] = []

    def __getstate__(self):
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state):
        self.__dict__.update(state, stream=sys.stdout)

    def setup(self, **info):
        """At the start of a run, a resumed one too: what is already written counts as done."""
        self.prior = len(list(self.results_dir.glob("trials/*.parquet")))
        self.done, self.failed, self.started, self.durations = set(), set(), {}, []
        self.start = self.last = self.clock()

    def line(self, trials) -> str:
        ended = self.done | self.failed
        done, failed = self.prior + len(self.done), len(self.failed)
        running = sum(t.status == "RUNNING" and t.trial_id not in ended for t in trials)
        elapsed = self.clock() - self.start
        left = self.total - done - failed
        # Trials left x their mean duration, shared among the trials that run at once.
        mean = sum(self.durations) / len(self.durations) if self.durations else float("nan")
        eta = mean * left / max(running, 1)
        best = "  ".join(f"best {k} {v:.3f}" for k, v in self.best.items())
        eta_text = _clock(eta) if eta == eta else "?"
        return (f"[{_clock(elapsed)}] done {done}  running {running}  failed {failed}  "
                f"of {self.total}  {best}  eta {eta_text}").rstrip()

    def _print(self, trials) -> None:
        print(self.line(trials), file=self.stream, flush=True)
        self.last = self.clock()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = self.clock()

    def _ended(self, trial) -> None:
        if trial.trial_id in self.started:
            self.durations.append(self.clock() - self.started.pop(trial.trial_id))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.clock() - self.last >= self.every:
            self._print(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done.add(trial.trial_id)
        self._ended(trial)
        result = final_result(trial)
        if result and result[names.STATUS] == "ok":
            for key in self.objectives:          # the final report carries every objective
                value = (trial.last_result or {}).get(key)
                if value is not None:
                    self.best[key] = max(self.best.get(key, value), value)
        self._print(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.failed.add(trial.trial_id)
        self._ended(trial)
        self._print(trials)
