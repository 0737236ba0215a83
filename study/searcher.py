"""Search over imbalance levels: one Optuna study per level behind one Tune searcher.

A sampler that maximises accuracy drifts to the easiest (least imbalanced) level,
but frontiers are read per level; so each named level gets an even share of the
trials (round robin in start order), and each level's own Optuna study searches
the loss's knobs from what that level taught it.
"""

from __future__ import annotations

import functools
import pickle

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch


def _space_with_ratio(space, low: float, high: float, trial) -> dict:
    """`--imbalance-range`: the ratio becomes one more Optuna parameter (log scale)."""
    trial.suggest_float("data.imbalance_ratio", low, high, log=True)
    return space(trial)


def optuna_search(space, metrics: list[str], seed: int) -> OptunaSearch:
    """An OptunaSearch maximising `metrics` (one or several) over `space`.

    TPE starts modelling after 3 trials, not Optuna's default 10: a level gets
    only a handful of trials on a CPU budget, and would otherwise be searched at random.
    """
    import optuna

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)
    metric = metrics if len(metrics) > 1 else metrics[0]
    mode = ["max"] * len(metrics) if len(metrics) > 1 else "max"
    return OptunaSearch(space=space, metric=metric, mode=mode, sampler=sampler)


class LevelSearch(Searcher):
    """Even shares of trials per imbalance level; one OptunaSearch per level.

    Trial n (in start order) goes to level n mod L; its config is that level's
    suggestion plus "data.imbalance_ratio". With `ratio_range` there is a single
    study, and the ratio is one of its parameters instead.

    Only a trial's final result reaches Optuna: the epochs' reports do not carry
    the objectives, and a trial without them (diverged) is told to Optuna as failed,
    so that no made-up value enters a Pareto front.
    """

    def __init__(self, space, metrics: list[str], levels: list[float], seed: int,
                 ratio_range: tuple[float, float] | None = None, cells: list[dict] | None = None):
        # metric=None: the objectives appear only in a trial's final report, and
        # Tune's strict check would otherwise demand them in every epoch's report.
        super().__init__(metric=None, mode=None)
        if ratio_range is not None:
            space = functools.partial(_space_with_ratio, space, *ratio_range)   # picklable, for resume
            levels = [None]
        self.metrics = list(metrics)
        # one search per (level, cell); with cells, round r of trials uses seed + r
        self.seed, self.vary_seed = seed, cells is not None
        self.levels = [(level, cell) for level in levels for cell in (cells or [{}])]
        self.searchers = [optuna_search(space, metrics, seed + i) for i in range(len(self.levels))]
        self.level_of: dict[str, int] = {}
        self.started = 0

    def suggest(self, trial_id: str):
        i = self.started % len(self.levels)
        config = self.searchers[i].suggest(trial_id)
        if config is None or config is Searcher.FINISHED:
            return config
        self.level_of[trial_id] = i
        level, cell = self.levels[i]
        config = {**config, **cell}
        if self.vary_seed:
            config["seed"] = self.seed + self.started // len(self.levels)
        self.started += 1
        if level is None:
            return config
        return {**config, "data.imbalance_ratio": level}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.level_of:
            return
        complete = result is not None and all(m in result for m in self.metrics)
        self.searchers[self.level_of[trial_id]].on_trial_complete(
            trial_id, result if complete else None, error=error or not complete)

    def save(self, checkpoint_path: str) -> None:
        # Ray's own OptunaSearch.save pickles its state the same way; this file is
        # written and read by the driver only, never taken from a user.
        state = {"levels": self.levels, "level_of": self.level_of, "started": self.started,
                 "searchers": [s.__dict__ for s in self.searchers]}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.levels, self.level_of, self.started = state["levels"], state["level_of"], state["started"]
        for searcher, saved in zip(self.searchers, state["searchers"]):
            searcher.__dict__.update(saved)
