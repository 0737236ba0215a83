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
import sys
import warnings
from pathlib import Path

from ray.tune.search import Searcher

from study import journal
from trainables import names


def _space_with_ratio(space, low: float, high: float, trial) -> dict:
    """`--imbalance-range`: the ratio becomes one more Optuna parameter (log scale)."""
    trial.suggest_float("data.imbalance_ratio", low, high, log=True)
    return space(trial)


def sampler(seed: int):
    """TPE, starting to model after 3 trials, not Optuna's default 10: a slot gets only a
    handful of trials on a CPU budget, and would otherwise be searched at random."""
    import optuna
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)


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
            config = {**entry.config, **({names.FROM_CHECKPOINT: checkpoint} if checkpoint else {}),
                      **({names.CONFIRM_OF: entry.confirm_of} if entry.confirm_of else {})}
            record = {"n": entry.n, "slot": entry.slot, "params": entry.params,
                      "distributions": entry.distributions, **self._again(trial_id, entry)}
            if entry.confirm_of:
                record.update(confirm_of=entry.confirm_of, member=entry.member)
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

    def _again(self, trial_id: str, entry: journal.Entry) -> dict:
        """Take up a journaled trial under a new trial id (its config is the entry's);
        returns journal fields to add to its new line."""
        return {}

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
    """Even shares of trials per slot; one Optuna study per slot, asked and told directly.

    The slots are (level, cell) pairs, levels-major: [(l0, c0), (l0, c1), ...,
    (l1, c0), ...]; slot i's study samples with seed + i. Trial n (in start order) goes
    to slot n mod S; its config is that slot's suggestion, its cell's keys and
    "data.imbalance_ratio" = its level. With cells, round r = n // S of the trials also
    gets "seed" = seed + r. With `ratio_range` there is a single slot (level None, no
    cell), and the ratio is one of its study's parameters instead.

    The studies live in `storage` (an Optuna RDB storage, study.optuna_store; in memory
    when None), named study.optuna_store.slot_name(sweep, ...), so that optuna-dashboard
    shows them while the sweep runs. Only a trial's final result reaches Optuna: the
    epochs' reports do not carry the objectives, and a trial without them (diverged) is
    told as failed, so that no made-up value enters a Pareto front. A trial the
    scheduler stopped is told as pruned: its metrics are an early epoch's, and Optuna
    keeps pruned trials out of its Pareto front (best_trials) while TPE ranks them after
    every completed trial, which is what a stop means.
    """

    def __init__(self, space, metrics: list[str], levels: list[float], seed: int,
                 ratio_range: tuple[float, float] | None = None, cells: list[dict] | None = None,
                 journal_file: Path | None = None, storage=None, sweep: str = "sweep",
                 attrs: dict | None = None):
        super().__init__(journal_file)
        import optuna

        from study.optuna_store import slot_name
        if ratio_range is not None:
            space = functools.partial(_space_with_ratio, space, *ratio_range)   # picklable
            levels = [None]
        self.metrics, self.space, self.attrs = list(metrics), space, dict(attrs or {})
        # with cells, round r of trials uses seed + r
        self.seed, self.vary_seed = seed, cells is not None
        self.slots: list[tuple[float | None, dict]] = [
            (level, cell) for level in levels for cell in (cells or [{}])]
        self.names = [slot_name(sweep, level, cell, ratio_range) for level, cell in self.slots]
        self.storage = storage if storage is not None else optuna.storages.InMemoryStorage()
        self.studies = [self._open(i, seed + i) for i in range(len(self.slots))]
        self.slot_of: dict[str, int] = {}          # trial id -> index of its slot
        self.number_of: dict[str, int] = {}        # trial id -> its Optuna trial's number
        self.rerun: dict[int, int] = {}            # journal n -> its RUNNING Optuna trial (resume)

    def _open(self, i: int, seed: int):
        """Slot i's study, created or (a resume, a storage another process wrote) loaded.
        A study of this name that holds trials of another sweep (another sweep_id: the same
        --name from another storage folder, on a shared database) is refused."""
        import optuna
        study = optuna.create_study(storage=self.storage, study_name=self.names[i], load_if_exists=True,
                                    directions=["maximize"] * len(self.metrics), sampler=sampler(seed))
        owner, mine = study.user_attrs.get("sweep_id"), self.attrs.get("sweep_id")
        if mine and owner and owner != mine and study.get_trials(deepcopy=False):
            raise StudyTaken(f"the Optuna storage holds study {self.names[i]} with trials of another sweep "
                             f"(sweep id {owner}); choose another --name")
        if study.metric_names is None:
            with warnings.catch_warnings():         # "experimental" since Optuna 3.2, and still there
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(self.metrics)
        level, cell = self.slots[i]
        for key, value in {**self.attrs, "level": level, "cell": cell}.items():
            study.set_user_attr(key, value)
        return study

    def study(self, slot: int):
        """Slot `slot`'s Optuna study: its trials, their states and values."""
        return self.studies[slot]

    def _new(self, trial_id: str, n: int):
        i = n % len(self.slots)
        trial = self.studies[i].ask()
        trial.set_user_attr(N, n)                   # the journal's n: what a resume matches it by
        level, cell = self.slots[i]
        constants = self.space(trial) or {}         # samples the trial's parameters
        config = {**trial.params, **constants, **cell}
        if self.vary_seed:
            config["seed"] = self.seed + n // len(self.slots)
        if level is not None:
            config["data.imbalance_ratio"] = level
        self.slot_of[trial_id], self.number_of[trial_id] = i, trial.number
        return config, {"slot": i, "optuna_trial": trial.number, "objectives": self.metrics,
                        "params": trial.params,
                        "distributions": {k: optuna_json(d) for k, d in trial.distributions.items()}}

    def _again(self, trial_id: str, entry: journal.Entry) -> dict:
        """The journaled trial's Optuna trial, still RUNNING in the storage; or, where the
        storage lacks it, a new one with its parameters (enqueued, so asked next)."""
        number = self.rerun.pop(entry.n, None)
        if number is None:
            study = self.studies[entry.slot]
            study.enqueue_trial(entry.params, user_attrs={N: entry.n})
            trial = study.ask()
            try:
                self.space(trial)                   # the enqueued values, with their distributions
            except (ValueError, TypeError) as e:
                raise journal.Damaged(f"journal line of trial {entry.n}: its parameters do not fit the "
                                      f"search ({e})") from None
            number = trial.number
        self.slot_of[trial_id], self.number_of[trial_id] = entry.slot, number
        return {"optuna_trial": number, "objectives": self.metrics}

    def resume(self, resumed: journal.Resumed) -> None:
        """Take up the slots' studies: tell each finished trial what its row says unless the
        storage has it already; keep a RUNNING trial for its rerun; add what the storage
        lacks (a copied sweep without its database) from the journal."""
        super().resume(resumed)
        # New sampler seeds: a sampler seeded as before would draw the first trials'
        # parameters again (its random state is not in the journal).
        self.studies = [self._open(i, resumed_seed(self.seed + i, self.started)) for i in range(len(self.slots))]
        # each stored trial by its journal n (the newest, should a trial hold one twice)
        stored = [{t.user_attrs[N]: t for t in study.get_trials(deepcopy=False) if N in t.user_attrs}
                  for study in self.studies]
        claimed: set[tuple[int, int]] = set()
        for entry in resumed.entries:
            if not 0 <= entry.slot < len(self.slots):
                raise journal.Damaged(f"journal line of trial {entry.n}: slot {entry.slot} is not one of this "
                                      f"sweep's {len(self.slots)}")
            known = stored[entry.slot].get(entry.n)
            if known is not None:
                claimed.add((entry.slot, known.number))
            self._take_up(entry, known, resumed)
        for i, study in enumerate(self.studies):    # asked, but never journaled (a crash between)
            for t in study.get_trials(deepcopy=False, states=[_state("RUNNING")]):
                if (i, t.number) not in claimed:
                    study.tell(t.number, state=_state("FAIL"))

    def _take_up(self, entry: journal.Entry, known, resumed: journal.Resumed) -> None:
        if entry.n not in resumed.done:
            if known is not None and known.state.name == "RUNNING":
                self.rerun[entry.n] = known.number
            return
        values = resumed.done[entry.n]
        state = _state("COMPLETE" if values else "PRUNED" if entry.n in resumed.stopped else "FAIL")
        if known is not None:
            if known.state.name == "RUNNING":       # its end was not told (the driver stopped first)
                self.studies[entry.slot].tell(known.number, values, state=state)
            return
        import optuna
        from optuna.distributions import json_to_distribution
        try:
            self.studies[entry.slot].add_trial(optuna.trial.create_trial(
                state=state, values=values, params=entry.params, user_attrs={N: entry.n},
                distributions={k: json_to_distribution(d) for k, d in entry.distributions.items()}))
        except (ValueError, TypeError, KeyError) as e:
            raise journal.Damaged(f"journal line of trial {entry.n}: its parameters do not fit the "
                                  f"search ({e})") from None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Complete with the final values; pruned if the scheduler stopped the trial (its
        last report is an epoch's, without a status); else failed. A storage that refuses
        is reported, not raised: the rows are the record, and a resume tells it again."""
        if trial_id not in self.slot_of:
            return
        complete = result is not None and all(m in result for m in self.metrics)
        stopped = not error and result is not None and names.STATUS not in result
        state = _state("COMPLETE" if complete else "PRUNED" if stopped else "FAIL")
        values = [float(result[m]) for m in self.metrics] if complete else None
        try:
            self.studies[self.slot_of[trial_id]].tell(self.number_of[trial_id], values, state=state)
        except Exception as e:
            print(f"Optuna: could not record trial {trial_id} ({str(e).splitlines()[0][:200]}); "
                  "--resume records it from its row", file=sys.stderr)


N = "n"                # an Optuna trial's user attribute: its journal n


class StudyTaken(ValueError):
    """The Optuna storage holds this sweep's study name with another sweep's trials."""


def _state(name: str):
    from optuna.trial import TrialState
    return TrialState[name]


def resumed_seed(seed: int, started: int) -> int:
    """A slot's sampler seed after a resume with `started` trials journaled: fixed by the
    journal (so resuming twice from one state draws the same), unlike the first run's."""
    return (seed + 1_000_003 * started) % 2**32


def optuna_json(distribution) -> str:
    from optuna.distributions import distribution_to_json
    return distribution_to_json(distribution)
