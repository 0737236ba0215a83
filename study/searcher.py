"""The sweep's searchers: one Optuna study per slot behind one Tune searcher, or a grid.

A slot is one imbalance level x one cell (a fixed part of the config, e.g. the
loss; a study without cells has the single empty cell), each with its own Optuna
search. A sampler that maximises accuracy drifts to the easiest (least
imbalanced) level, but frontiers are read per level and cell; so each slot gets
an even share of the trials (round robin in start order), and each slot's own
Optuna study searches the loss's knobs from what that slot taught it.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study import journal
from trainables import names


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


class JournaledSearch(Searcher):
    """A Tune searcher that writes every trial it suggests to the sweep's journal
    (study.journal) and, after a --resume, first runs again the trials that had
    started without finishing, each from its newest checkpoint.

    Subclasses say how a new trial n is suggested (`_new`) and how a journaled one is
    taken up again (`_again`). Nothing is saved through Tune's searcher checkpoints:
    the journal is the state, and it is JSON.
    """

    def __init__(self, journal_file: Path | None):
        # metric=None: the objectives appear only in a trial's final report, and
        # Tune's strict check would otherwise demand them in every epoch's report.
        super().__init__(metric=None, mode=None)
        self.journal_file = journal_file
        self.started = 0                           # journal entries (trials suggested) so far
        self.pending: list[tuple[journal.Entry, str | None]] = []

    def resume(self, resumed: journal.Resumed) -> None:
        """Continue after `resumed`: its finished trials are known, its pending ones run first."""
        self.started = len(resumed.entries)
        self.pending = list(resumed.pending)

    def suggest(self, trial_id: str):
        if self.pending:
            entry, checkpoint = self.pending.pop(0)
            self._again(trial_id, entry)
            config = {**entry.config, **({names.FROM_CHECKPOINT: checkpoint} if checkpoint else {})}
            record = {"n": entry.n, "slot": entry.slot, "params": entry.params,
                      "distributions": entry.distributions}
        else:
            suggested = self._new(trial_id, self.started)
            if suggested is None or suggested is Searcher.FINISHED:
                return suggested
            config, record = suggested
            record["n"] = self.started
            self.started += 1
        if self.journal_file is not None:
            journal.append(self.journal_file, {**record, "trial_id": trial_id,
                                               "config": names.trial_config(config)})
        return config

    def _new(self, trial_id: str, n: int):
        """(config, journal fields) of trial n, or None / Searcher.FINISHED."""
        raise NotImplementedError

    def _again(self, trial_id: str, entry: journal.Entry) -> None:
        """Take up a journaled trial under a new trial id (its config is the entry's)."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """A grid learns nothing from results; a search overrides this."""

    def save(self, checkpoint_path: str) -> None:
        """Writes nothing: the journal is this searcher's state (see JournaledSearch)."""

    def restore(self, checkpoint_path: str) -> None:
        raise RuntimeError("a sweep's search is rebuilt from its journal, never from a pickled state")


class GridSearch(JournaledSearch):
    """Every combination of `grid` x levels x seeds, once each, in a fixed order."""

    def __init__(self, grid: dict[str, list], levels: list[float], seeds: list[int],
                 journal_file: Path | None = None):
        super().__init__(journal_file)
        keys = [*grid, "data.imbalance_ratio", "seed"]
        self.points = [dict(zip(keys, values))
                       for values in itertools.product(*grid.values(), levels, seeds)]

    def _new(self, trial_id: str, n: int):
        if n >= len(self.points):
            return Searcher.FINISHED
        return dict(self.points[n]), {"slot": 0}


class LevelSearch(JournaledSearch):
    """Even shares of trials per slot; one OptunaSearch per slot.

    The slots are (level, cell) pairs, levels-major: [(l0, c0), (l0, c1), ...,
    (l1, c0), ...]; slot i's OptunaSearch samples with seed + i. Trial n (in start
    order) goes to slot n mod S; its config is that slot's suggestion, its cell's
    keys and "data.imbalance_ratio" = its level. With cells, round r = n // S of the
    trials also gets "seed" = seed + r. With `ratio_range` there is a single slot
    (level None, no cell), and the ratio is one of its study's parameters instead.

    Only a trial's final result reaches Optuna: the epochs' reports do not carry
    the objectives, and a trial without them (diverged) is told to Optuna as failed,
    so that no made-up value enters a Pareto front. A trial MO-ASHA stopped is told
    as pruned: its metrics are an early epoch's, and Optuna keeps pruned trials out
    of its Pareto front (best_trials) while TPE ranks them after every completed
    trial, which is what a stop means. A resumed search tells each slot's study its
    finished trials again, from their rows (resume).
    """

    def __init__(self, space, metrics: list[str], levels: list[float], seed: int,
                 ratio_range: tuple[float, float] | None = None, cells: list[dict] | None = None,
                 journal_file: Path | None = None):
        super().__init__(journal_file)
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
        self.space = space
        self.searchers = [optuna_search(space, metrics, seed + i, storage)
                          for i, storage in enumerate(self.storages)]
        self.slot_of: dict[str, int] = {}          # trial id -> index of its slot

    def _new(self, trial_id: str, n: int):
        i = n % len(self.slots)
        config = self.searchers[i].suggest(trial_id)
        if config is None or config is Searcher.FINISHED:
            return config
        self.slot_of[trial_id] = i
        level, cell = self.slots[i]
        config = {**config, **cell}
        if self.vary_seed:
            config["seed"] = self.seed + n // len(self.slots)
        if level is not None:
            config["data.imbalance_ratio"] = level
        asked = self.study(i).trials[-1]           # the Optuna trial suggest just asked for
        return config, {"slot": i, "params": asked.params, "distributions": {
            k: optuna_json(d) for k, d in asked.distributions.items()}}

    def _again(self, trial_id: str, entry: journal.Entry) -> None:
        # Optuna asks for the enqueued parameters next, so the trial is RUNNING in its
        # slot's study again and is told its values when it ends.
        self.study(entry.slot).enqueue_trial(entry.params)
        self.searchers[entry.slot].suggest(trial_id)
        self.slot_of[trial_id] = entry.slot

    def resume(self, resumed: journal.Resumed) -> None:
        """Tell each slot's study the finished trials, as their rows hold them: complete
        with the objective values, or failed (an error, a stop or a divergence)."""
        import optuna
        from optuna.distributions import json_to_distribution
        from optuna.trial import TrialState
        super().resume(resumed)
        # New sampler seeds: a sampler seeded as before would draw the first trials'
        # parameters again (its random state is not in the journal).
        self.searchers = [optuna_search(self.space, self.metrics, resumed_seed(self.seed + i, self.started),
                                        storage) for i, storage in enumerate(self.storages)]
        for entry in resumed.entries:
            if not 0 <= entry.slot < len(self.slots):
                raise journal.Damaged(f"journal line of trial {entry.n}: slot {entry.slot} is not one of this "
                                      f"sweep's {len(self.slots)}")
            if entry.n not in resumed.done:
                continue
            values = resumed.done[entry.n]
            state = (TrialState.COMPLETE if values else
                     TrialState.PRUNED if entry.n in resumed.stopped else TrialState.FAIL)
            try:
                self.study(entry.slot).add_trial(optuna.trial.create_trial(
                    state=state, values=values, params=entry.params,
                    distributions={k: json_to_distribution(d) for k, d in entry.distributions.items()}))
            except (ValueError, TypeError, KeyError) as e:
                raise journal.Damaged(f"journal line of trial {entry.n}: its parameters do not fit the "
                                      f"search ({e})") from None

    def study(self, slot: int):
        """Slot `slot`'s Optuna study: its trials, their states and values."""
        import optuna
        return optuna.load_study(study_name=STUDY_NAME, storage=self.storages[slot])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Complete with the final values; pruned if the scheduler stopped the trial (its
        last report is an epoch's, without a status); else failed."""
        if trial_id not in self.slot_of:
            return
        complete = result is not None and all(m in result for m in self.metrics)
        stopped = not error and result is not None and names.STATUS not in result
        # OptunaSearch tells a trial without values as pruned unless error is set
        self.searchers[self.slot_of[trial_id]].on_trial_complete(
            trial_id, result if complete else None, error=not complete and not stopped)


def resumed_seed(seed: int, started: int) -> int:
    """A slot's sampler seed after a resume with `started` trials journaled: fixed by the
    journal (so resuming twice from one state draws the same), unlike the first run's."""
    return (seed + 1_000_003 * started) % 2**32


def optuna_json(distribution) -> str:
    from optuna.distributions import distribution_to_json
    return distribution_to_json(distribution)
