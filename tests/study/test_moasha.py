"""The MO-ASHA scheduler's decisions (study.moasha), driven result by result as Tune
drives them; its ranking is tested against brute force in test_ranking."""

from dataclasses import dataclass, field

import pytest
from ray.tune.schedulers import TrialScheduler

from study.moasha import MOASHA, default_grace, milestones
from trainables import names


@dataclass
class _Trial:                      # what the scheduler reads of a Tune trial
    trial_id: str
    config: dict = field(default_factory=dict)


def _report(scheduler, trial, epoch, acc, bal):
    return scheduler.on_trial_result(None, trial, {names.EPOCH: epoch, names.KNN_ACC: acc,
                                                   names.KNN_BALANCEDNESS: bal})


@pytest.mark.parametrize("epochs, grace, eta, rungs", [
    (27, 3, 3, [3, 9]), (20, 2, 3, [2, 6, 18]), (2, 1, 3, [1]), (1, 1, 3, []), (20, 5, 4, [5])])
def test_milestones(epochs, grace, eta, rungs):
    assert milestones(epochs, grace, eta) == rungs


def test_default_grace_gives_two_rungs_where_it_can():
    assert milestones(20, default_grace(20, 3), 3) == [2, 6, 18]
    assert milestones(9, default_grace(9, 3), 3) == [1, 3]
    assert default_grace(2, 3) == 1


def test_a_rung_keeps_the_top_third_by_nondominated_sorting_per_level():
    s = MOASHA(epochs=9, grace=1, eta=3)                        # rungs 1 and 3
    a, b, c, d = (_Trial(x, {"data.imbalance_ratio": 10.0}) for x in "abcd")
    other = _Trial("e", {"data.imbalance_ratio": 100.0})
    assert _report(s, a, 1, 0.5, 0.5) == TrialScheduler.CONTINUE          # first: 1 of 1 kept
    assert _report(s, b, 1, 0.4, 0.4) == TrialScheduler.STOP              # dominated by a; 1 of 2
    # a and c form the front (each better in one objective), both ends of it: the tie goes
    # to a, which arrived first, and 1 of 3 is kept
    assert _report(s, c, 1, 0.6, 0.3) == TrialScheduler.STOP
    assert _report(s, d, 1, 0.9, 0.9) == TrialScheduler.CONTINUE          # dominates all; 2 of 4 kept
    assert _report(s, other, 1, 0.1, 0.1) == TrialScheduler.CONTINUE      # alone at its level
    assert _report(s, a, 2, 0.1, 0.1) == TrialScheduler.CONTINUE          # no rung at epoch 2
    assert s.stopped == 2


def test_a_restarted_trial_keeps_its_decision_at_a_rung():
    s = MOASHA(epochs=9, grace=1, eta=3)
    a, b = _Trial("a"), _Trial("b")
    assert _report(s, a, 1, 0.5, 0.5) == TrialScheduler.CONTINUE
    assert _report(s, b, 1, 0.9, 0.9) == TrialScheduler.CONTINUE
    # a restarts from an earlier checkpoint and reports epoch 1 again: it was kept when it
    # arrived (first of one), though b now beats it
    assert _report(s, a, 1, 0.5, 0.5) == TrialScheduler.CONTINUE
    assert len(s.recorded[(None, 1)]) == 2


def test_a_trial_without_validation_objectives_ranks_last():
    s = MOASHA(epochs=9, grace=1, eta=3)
    assert _report(s, _Trial("a"), 1, 0.2, 0.2) == TrialScheduler.CONTINUE
    result = {names.EPOCH: 1}                                             # no kNN monitor
    assert s.on_trial_result(None, _Trial("b"), result) == TrialScheduler.STOP


def test_a_resumed_sweeps_scheduler_replays_moasha_only_and_never_unpickles(tmp_path):
    # ASHA's own restore(path) unpickles a file; a resume must not call it (nor anything
    # like it) with the sweep folder, and MO-ASHA replays its rungs from the history
    from ray.tune.schedulers import ASHAScheduler

    from study.journal import Resumed
    from study.plan import SweepPlan
    from study.runner import build_scheduler
    resumed = Resumed([], {}, [])
    plan = SweepPlan(study="kpcl", name="s", storage=str(tmp_path), base={}, scheduler="asha", epochs=8)
    asha, rungs = build_scheduler(plan, resumed)
    assert isinstance(asha, ASHAScheduler) and rungs == [2]
    moasha, rungs = build_scheduler(SweepPlan(**{**plan.__dict__, "scheduler": "moasha"}), resumed)
    assert isinstance(moasha, MOASHA) and rungs == [1, 3] and moasha.recorded == {}
