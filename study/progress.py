"""A one-line live progress display, in place of Ray's wide tables."""

from __future__ import annotations

import heapq
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
    """Prints `elapsed, done/running/failed/total, best per objective, eta` to stderr when
    a trial ends and at most every `every` seconds while trials run (stdout is the summary's).

    slots: how many trials run at once (the cluster's room for them, or --max-concurrent).
    """

    def __init__(self, total: int, objectives: list[str], results_dir: Path, slots: int = 1,
                 every: float = 30.0, stream=None, clock=time.monotonic):
        self.clock = clock
        self.total, self.objectives, self.every, self.stream = total, objectives, every, stream
        self.slots = max(1, slots)
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
        self.__dict__.update(state, stream=None)

    def setup(self, **info):
        """At the start of a run, a resumed one too: what is already written counts as done."""
        self.prior = len(list(self.results_dir.glob("trials/*.parquet")))
        self.done, self.failed, self.started, self.durations = set(), set(), {}, []
        self.start = self.last = self.clock()

    def eta(self) -> float:
        """Seconds until the last trial ends, scheduled at the finished trials' mean duration m:
        a running trial frees its slot after max(m - its age, 0) s, a free slot at once, and
        each trial not started yet takes the slot that frees first and holds it for m s; the
        estimate is when the last slot frees. A start only fills the slot the schedule gave
        that trial, so the estimate does not swing as trials start and end (it did when the
        work left was divided by the number running). NaN until a trial has finished."""
        if not self.durations:
            return float("nan")
        mean, now = sum(self.durations) / len(self.durations), self.clock()
        slots = [max(mean - (now - started), 0.0) for started in self.started.values()]
        waiting = max(self.total - self.prior - len(self.done) - len(self.failed) - len(slots), 0)
        slots += [0.0] * max(self.slots - len(slots), 0)
        heapq.heapify(slots)
        for _ in range(waiting):
            heapq.heappush(slots, heapq.heappop(slots) + mean)
        return max(slots, default=0.0)

    def line(self) -> str:
        done, failed = self.prior + len(self.done), len(self.failed)
        best = "  ".join(f"best {k} {v:.3f}" for k, v in self.best.items())
        eta = self.eta()
        return (f"[{_clock(self.clock() - self.start)}] done {done}  running {len(self.started)}  "
                f"failed {failed}  of {self.total}  {best}  eta {_clock(eta) if eta == eta else '?'}")

    def _print(self) -> None:
        print(self.line(), file=self.stream or sys.stderr, flush=True)
        self.last = self.clock()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = self.clock()

    def _ended(self, trial) -> None:
        if trial.trial_id in self.started:
            self.durations.append(self.clock() - self.started.pop(trial.trial_id))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.clock() - self.last >= self.every:
            self._print()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done.add(trial.trial_id)
        self._ended(trial)
        result = final_result(trial)
        if result and result[names.STATUS] == "ok":
            for key in self.objectives:          # the final report carries every objective
                value = (trial.last_result or {}).get(key)
                if value is not None:
                    self.best[key] = max(self.best.get(key, value), value)
        self._print()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.failed.add(trial.trial_id)
        self._ended(trial)
        self._print()


def quiet_libraries() -> None:
    """The console is ours: Optuna's line per trial and study, MLflow's and Alembic's notes on
    creating a store are logged at WARNING and above only."""
    import logging

    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
