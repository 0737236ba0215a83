"""Multi-objective asynchronous successive halving (MO-ASHA; Schmucker et al., 2021):
a thin Tune scheduler around study.ranking.

Rungs sit at epochs grace * eta^r below the last epoch (`milestones`). A trial that
reports a rung's epoch is recorded there with its per-epoch validation objectives
(the kNN monitor's top-1 and the p(V) of its per-class accuracies), and continues
if it is in the top ceil(n / eta) of the n results that rung holds so far, ranked by
non-dominated sorting with crowding distance as ties' rule (study.ranking);
otherwise Tune stops it. As in ASHA, nothing waits for a rung to fill: a trial is
judged against what arrived before it, so early trials are promoted generously.
Rungs are kept per imbalance level (`group_by`): a level's trials compete only
with each other, as its frontier is read on its own. A resumed sweep's rungs are
rebuilt from its trials' history (`replay_history`; not Tune's pickle-based
`restore`, which this class leaves alone).

A stopped trial's row still has test metrics: the trainable runs its probes at each
rung epoch (names.PROBE_AT) and sends them with that epoch's report, so the report
Tune stops on holds them (status "stopped"). The searcher tells Optuna such a trial
was pruned, never complete (study.searcher).
"""

from __future__ import annotations

import math

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from study.ranking import keep
from trainables import names

ETA = 3                  # the reduction factor: a rung keeps a third (MO-ASHA's and Syne Tune's default)
# The per-epoch validation objectives the rungs rank on (maximised).
RUNG_OBJECTIVES = (names.KNN_ACC, names.KNN_BALANCEDNESS)


def milestones(epochs: int, grace: int, eta: float) -> list[int]:
    """The rung epochs grace, grace * eta, ... below `epochs` (the last epoch ends a trial
    anyway), e.g. (27, 3, 3) -> [3, 9]; (2, 1, 3) -> [1]."""
    if grace < 1 or eta <= 1:
        raise ValueError(f"a grace period >= 1 and a reduction factor > 1 (got {grace}, {eta})")
    out, r = [], 0
    while round(grace * eta ** r) < epochs:
        out.append(round(grace * eta ** r))
        r += 1
    return sorted(set(out))


def default_grace(epochs: int, eta: float) -> int:
    """Two rungs where the epochs allow: grace = epochs / eta^2, at least 1."""
    return max(1, math.floor(epochs / eta ** 2))


class MOASHA(FIFOScheduler):
    """Tune TrialScheduler: STOP a trial at a rung unless study.ranking.keep keeps it."""

    def __init__(self, epochs: int, grace: int, eta: float, group_by: str = "data.imbalance_ratio",
                 objectives: tuple[str, ...] = RUNG_OBJECTIVES):
        super().__init__()
        self.rungs = milestones(epochs, grace, eta)
        self.eta, self.group_by, self.objectives = eta, group_by, objectives
        self.recorded: dict[tuple, dict[str, list[float]]] = {}   # (level, rung) -> trial id -> point
        self.stopped = 0

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True                               # it ranks on its own objectives

    def record(self, level, rung: int, trial_id: str, point: list[float]) -> bool:
        """Record a result at a rung; True if it continues. A trial recorded there
        before (Tune restarted it from an earlier checkpoint) keeps its decision."""
        results = self.recorded.setdefault((level, rung), {})
        if trial_id in results:
            ids = list(results)
            return bool(keep(list(results.values())[:ids.index(trial_id) + 1], self.eta)[-1])
        results[trial_id] = point
        return bool(keep(list(results.values()), self.eta)[-1])

    def replay_history(self, sweep_dir) -> dict[str, bool]:
        """After a --resume: record the rung results of the trials that have rows, from
        their history, in the order they started (the journal's), so that the rungs go on
        from what they held rather than promoting the next trials as if they were the
        first. Returns trial id -> whether its last rung kept it, as replayed here: the
        live decisions where trials reached each rung in start order (one at a time);
        with trials in parallel an approximation, and trials without a row are left out."""
        from analysis.results import load_history, load_results
        from study.journal import FILE, read
        try:
            rows = set(load_results(sweep_dir)["trial_id"])
            history = load_history(sweep_dir)
        except FileNotFoundError:                 # no trial has a row yet
            return {}
        if history.empty:                         # every trial with a row failed before an epoch
            return {}
        replayed = {}
        for entry in read(sweep_dir / FILE):
            # the level as the live rungs key it: the trial's config (a list dataset's row has
            # no imbalance_ratio, its config does)
            level = entry.config.get(self.group_by)
            for trial_id in (t for t in entry.trial_ids if t in rows):
                epochs = history[history["trial_id"] == trial_id].set_index(names.EPOCH)
                for rung in (r for r in self.rungs if r in epochs.index):
                    point = [float(epochs.at[rung, o]) if o in epochs else math.nan for o in self.objectives]
                    replayed[trial_id] = self.record(level, rung, trial_id, point)
        return replayed

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        epoch = result.get(names.EPOCH)
        if epoch not in self.rungs:
            return TrialScheduler.CONTINUE
        point = [float(result.get(o, math.nan)) for o in self.objectives]
        if self.record(trial.config.get(self.group_by), int(epoch), trial.trial_id, point):
            return TrialScheduler.CONTINUE
        self.stopped += 1
        return TrialScheduler.STOP

    def debug_string(self) -> str:
        return f"MO-ASHA: rungs at epochs {self.rungs}, eta {self.eta:g}, {self.stopped} stopped"
