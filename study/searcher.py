"""Search over imbalance levels: one Optuna study per slot behind one Tune searcher.

A slot is one imbalance level x one cell (a fixed part of the config, e.g. the
loss; a study without cells has the single empty cell), each with its own Optuna
search. A sampler that maximises accuracy drifts to the easiest (least
imbalanced) level, but frontiers are read per level and cell; so each slot gets
an even share of the trials (round robin in start order), and each slot's own
Optuna study searches the loss's knobs from what that slot taught it.
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


STUDY_NAME = "slot"


def optuna_search(space, metrics: list[str], seed: int, storage=None) -> OptunaSearch:
    """An OptunaSearch maximising `metrics` (one or several) over `space`, its study
    named STUDY_NAME in `storage` (Optuna's in-memory default when None).

    TPE starts modelling after 3 trials, not Optuna's default 10: a slot gets
    only a handful of trials on a CPU budget, and would otherwise be searched at random.
    """
    import optuna

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)
    metric = metrics if len(metrics) > 1 else metrics[0]
    mode = ["max"] * len(metrics) if len(metrics) > 1 else "max"
    return OptunaSearch(space=space, metric=metric, mode=mode, sampler=sampler, study_name=STUDY_NAME,
                        storage=storage)


class LevelSearch(Searcher):
    """Even shares of trials per slot; one OptunaSearch per slot.

    The slots are (level, cell) pairs, levels-major: [(l0, c0), (l0, c1), ...,
    (l1, c0), ...]; slot i's OptunaSearch samples with seed + i. Trial n (in start
    order) goes to slot n mod S; its config is that slot's suggestion, its cell's
    keys and "data.imbalance_ratio" = its level. With cells, round r = n // S of the
    trials also gets "seed" = seed + r. With `ratio_range` there is a single slot
    (level None, no cell), and the ratio is one of its study's parameters instead.

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
        # one slot = one imbalance level x one cell, each with its own Optuna search;
        # with cells, round r of trials uses seed + r
        self.seed, self.vary_seed = seed, cells is not None
        self.slots: list[tuple[float | None, dict]] = [
            (level, cell) for level in levels for cell in (cells or [{}])]
        import optuna
        # Each slot's Optuna study lives in a storage of ours, so that it can be read
        # through Optuna's public API (self.study) rather than OptunaSearch's internals.
        self.storages = [optuna.storages.InMemoryStorage() for _ in self.slots]
        self.searchers = [optuna_search(space, metrics, seed + i, storage)
                          for i, storage in enumerate(self.storages)]
        self.slot_of: dict[str, int] = {}          # trial id -> index of its slot
        self.started = 0                           # trials suggested so far

    def suggest(self, trial_id: str):
        i = self.started % len(self.slots)
        config = self.searchers[i].suggest(trial_id)
        if config is None or config is Searcher.FINISHED:
            return config
        self.slot_of[trial_id] = i
        level, cell = self.slots[i]
        config = {**config, **cell}
        if self.vary_seed:
            config["seed"] = self.seed + self.started // len(self.slots)
        self.started += 1
        if level is None:
            return config
        return {**config, "data.imbalance_ratio": level}

    def study(self, slot: int):
        """Slot `slot`'s Optuna study: its trials, their states and values."""
        import optuna
        return optuna.load_study(study_name=STUDY_NAME, storage=self.storages[slot])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.slot_of:
            return
        complete = result is not None and all(m in result for m in self.metrics)
        self.searchers[self.slot_of[trial_id]].on_trial_complete(
            trial_id, result if complete else None, error=error or not complete)

    def save(self, checkpoint_path: str) -> None:
        # Ray's own OptunaSearch.save pickles its state the same way; this file is
        # written and read by the driver only, never taken from a user.
        # one pickle: the searchers' studies and self.storages stay the same objects
        state = {"slots": self.slots, "slot_of": self.slot_of, "started": self.started,
                 "storages": self.storages, "searchers": [s.__dict__ for s in self.searchers]}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.slots, self.slot_of = state["slots"], state["slot_of"]
        self.started = state["started"]
        self.storages = state["storages"]
        for searcher, saved in zip(self.searchers, state["searchers"]):
            searcher.__dict__.update(saved)
