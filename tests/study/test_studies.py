"""Every registered study gives valid trial configs, without Ray."""

import optuna
import pytest

from study.studies import BASE, STUDIES, budget
from trainables.config import TrialConfig
from trainables.presets import SMOKE

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("name", list(STUDIES))
def test_each_study_space_gives_valid_configs_within_its_ranges(name):
    study = STUDIES[name]
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        if study.space is None:
            configs = [{k: v} for k, values in study.grid.items() for v in values]
        else:
            trial = sampler.ask()
            configs = [{**study.space(trial), **trial.params}]
            # parameter names are config keys, so the trial's params go straight in
            assert set(trial.params) <= set(TrialConfig().to_flat())
        for flat in configs:
            cfg = TrialConfig.from_flat({**study.base, **flat, "data.imbalance_ratio": 10})
            assert cfg.data.total == BASE["data.total"]
            if name == "kpcl":
                assert cfg.loss.name == "kcl" and 1 <= cfg.loss.k <= 32
            if name in ("kpcl", "cl", "supcon"):
                assert 0.05 <= cfg.loss.temperature <= 0.5


def test_presets_are_valid_configs():
    for smoke, gpu in ((True, False), (False, False), (False, True)):
        preset = budget(smoke, gpu)
        TrialConfig.from_flat({**BASE, **preset.config})
        assert preset.num_samples >= 4
    assert budget(True, False).config["optim.epochs"] == SMOKE["optim.epochs"]


def test_real_budgets_confirm_frontiers_and_repeat_grids_on_three_seeds():
    for gpu in (False, True):
        preset = budget(False, gpu)
        assert preset.confirm == 3 and preset.seeds >= 3         # an interval needs seeds; 3 gives t with 2 dof
    assert budget(True, False).confirm == 0                     # --smoke stays a few seconds


@pytest.mark.parametrize("argv, confirm", [(["kpcl"], 3), (["kpcl", "--confirm", "0"], 0), (["kpcl", "--smoke"], 0),
                                           (["select"], 0), (["select", "--confirm", "2"], 2), (["fig2"], 0)])
def test_which_sweeps_confirm_their_frontiers_by_default(argv, confirm, tmp_path):
    from study.plan import build_plan
    from study.sweep import build_parser
    args = build_parser().parse_args([*argv, "--gpus-per-trial", "0"])
    assert build_plan(args, tmp_path, "s").confirm == confirm
