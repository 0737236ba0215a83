"""Confirmed frontiers: every Pareto-optimal search trial re-run with K new seeds.

A search picks its frontier on one seed per configuration, so the frontier is partly
selected noise (the winner's curse). With `--confirm K` the sweep, once every search
trial has a row, runs a second Tuner whose trials are confirmations: for each slot
(imbalance level x cell, study.searcher) the search trials on the Pareto front of the
sweep's objectives, each with the same K new seeds

    s_j = max(seeds the search used) + 1 + j,        j = 0 .. K-1,

so that no confirmation runs on a seed the search selected on, and the members of one
front pair by seed (analysis.confirmation compares them). A confirmation's config is its
member's with the new seed and names.CONFIRM_OF = the member's trial id: its row's
confirm_of column names the member, and its MLflow run is a child of the sweep's run
like every trial's. Confirmations are journaled like search trials ("confirm_of" and
"member", the member's journal n, in their lines) and are never told to the Optuna studies: they are measurements of chosen
configurations, not samples of the search.

The members and points are computed from the journal and the rows alone
(journal.resume_state), so a resumed sweep plans the same confirmations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ray.tune.search import Searcher

from analysis.frontier import pareto_mask
from study import journal
from study.searcher import JournaledSearch
from trainables import names


@dataclass(frozen=True)
class Point:
    """One confirmation trial: its slot, the member it re-runs (its row's trial id and its
    journal n), its config (new seed)."""
    slot: int
    confirm_of: str
    config: dict
    member: int = -1

    @property
    def key(self) -> tuple[int, int]:
        """(member n, seed): what a journaled confirmation is matched by on a resume (a
        member rerun after its row was moved away keeps its n, not its trial id)."""
        return self.member, int(self.config["seed"])


def members(search: journal.Resumed) -> list[journal.Entry]:
    """The search trials on their slot's Pareto front of the objective values their rows
    hold (ok rows with every objective), by slot, then journal order."""
    by_slot: dict[int, list[journal.Entry]] = {}
    for entry in search.entries:
        if search.done.get(entry.n) is not None:
            by_slot.setdefault(entry.slot, []).append(entry)
    out = []
    for slot in sorted(by_slot):
        entries = by_slot[slot]
        on = pareto_mask(np.array([search.done[e.n] for e in entries], dtype=float))
        out += [e for e, keep in zip(entries, on) if keep]
    return out


def new_seeds(search: journal.Resumed, seed: int, k: int) -> list[int]:
    """K seeds above every seed the search used (its trials' own, else the sweep's `seed`)."""
    used = [int(e.config.get("seed", seed)) for e in search.entries] or [seed]
    return [max(used) + 1 + j for j in range(k)]


def points(search: journal.Resumed, seed: int, k: int) -> list[Point]:
    """Every member x every new seed, member-major: the sweep's confirmation trials."""
    seeds = new_seeds(search, seed, k)
    return [Point(e.slot, search.rows[e.n], {**e.config, "seed": s}, e.n) for e in members(search) for s in seeds]


class ConfirmSearch(JournaledSearch):
    """The confirmation trials, in the order of `points`; a resume reruns the pending ones
    first (JournaledSearch), then goes on with the points not journaled yet (by Point.key)."""

    def __init__(self, planned: list[Point], journal_file=None):
        super().__init__(journal_file)
        self.todo = list(planned)                  # the points still to hand out, in order

    def resume(self, resumed: journal.Resumed) -> None:
        """`resumed`: the whole journal; its n go on after every entry, search ones too."""
        confirmations = resumed.part(confirmations=True)
        self.started, self.pending = len(resumed.entries), list(confirmations.pending)
        journaled = {(e.member, int(e.config.get("seed", -1))) for e in confirmations.entries}
        by_id = {(e.confirm_of, int(e.config.get("seed", -1))) for e in confirmations.entries}   # lines without n
        self.todo = [p for p in self.todo if p.key not in journaled and (p.confirm_of, p.key[1]) not in by_id]

    def left(self) -> int:
        """Trials this searcher still hands out: the pending reruns and the new points."""
        return len(self.pending) + len(self.todo)

    def _new(self, trial_id: str, n: int):
        if not self.todo:
            return Searcher.FINISHED
        point = self.todo.pop(0)
        return ({**point.config, names.CONFIRM_OF: point.confirm_of},
                {"slot": point.slot, "confirm_of": point.confirm_of, "member": point.member})


def _state(plan) -> tuple[journal.Resumed, journal.Resumed | None]:
    """(the whole journal, the search's part if every search trial has a row, else None)."""
    from study.runner import checkpoints_at, total_trials
    state = journal.resume_state(plan.sweep_dir, plan.objectives, checkpoints_at(plan))
    search = state.part(confirmations=False)
    return state, (search if len(search.done) >= total_trials(plan) else None)


def expected_trials(plan) -> int:
    """Rows a finished sweep has: its search trials, and with --confirm (once the search is
    complete) its confirmations."""
    from study.runner import total_trials
    if not plan.confirm:
        return total_trials(plan)
    _, search = _state(plan)
    return total_trials(plan) + (len(points(search, plan.seed, plan.confirm)) if search else 0)


def run_confirmations(plan, callbacks: list) -> None:
    """After a complete search (an interrupted one is resumed first), run the confirmation
    trials the journal lacks, in a second Tuner of the sweep's experiment, without a
    scheduler: a confirmation runs its whole length."""
    import sys

    from study.cluster import trial_slots
    from study.progress import Progress
    from study.runner import make_tuner, total_trials
    state, search = _state(plan)
    if search is None:
        return
    planned = points(search, plan.seed, plan.confirm)
    searcher = ConfirmSearch(planned, plan.sweep_dir / journal.FILE)
    searcher.resume(state)
    left = searcher.left()
    if left <= 0:
        return
    progress = []
    if not plan.quiet:
        seeds = new_seeds(search, plan.seed, plan.confirm)
        print(f"confirming the frontier: {left} of {len(planned)} trials ({len(planned) // plan.confirm} "
              f"Pareto-optimal configurations x seeds {', '.join(map(str, seeds))})", file=sys.stderr, flush=True)
        progress = [Progress(total_trials(plan) + len(planned), plan.objectives, plan.results_dir, trial_slots(plan))]
    make_tuner(plan, callbacks + progress, searcher, left).fit()
