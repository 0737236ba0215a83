"""trainables.presets.resolve: the one precedence both entry points build a config by."""

from trainables.presets import DATASET_PRESETS, SMOKE, parse_set, resolve
from trainables.trial import build_parser, config_from_args

BASE = {"data.dataset": "shapes", "data.total": 2000, "optim.lr": 0.01}
BUDGET = {"optim.epochs": 20, "model.width": 8}


def test_later_layers_win_in_the_documented_order():
    flat = resolve({"optim.lr": 0.2}, {"optim.epochs": 3, "data.data_root": "/d", "model.arch": None},
                   base=BASE, budget=BUDGET, dataset="cifar10", gpu=False)
    assert flat["optim.lr"] == 0.2                         # --set beats the literature's 0.1 and the base
    assert flat["optim.epochs"] == 3                       # a flag beats everything
    assert flat["model.arch"] == "resnet32"                # the literature (a None flag is no flag)
    assert flat["model.width"] == 8                        # the budget, untouched by the dataset
    assert flat["data.total"] is None and flat["data.dataset"] == "cifar10"   # shapes' total dropped
    assert flat["loss.temperature"] == DATASET_PRESETS["cifar10"]["loss.temperature"]


def test_the_literature_epochs_apply_on_a_gpu_only_and_nothing_with_smoke():
    cpu = resolve({}, {}, budget=BUDGET, dataset="cifar100", gpu=False)
    gpu = resolve({}, {}, budget=BUDGET, dataset="cifar100", gpu=True)
    assert cpu["optim.epochs"] == 20 and gpu["optim.epochs"] == 200
    smoke = resolve({}, {}, budget=SMOKE, dataset="cifar10", smoke=True, gpu=True)
    assert smoke["optim.epochs"] == SMOKE["optim.epochs"] and "model.arch" not in smoke
    # --set keeps a total for another dataset: it comes after the dataset layer
    assert resolve({"data.total": 500}, {}, base=BASE, dataset="digits")["data.total"] == 500


def test_the_trial_command_resolves_the_same_way():
    args = build_parser().parse_args(["--dataset", "cifar10", "--data-root", "/d", "--set", "optim.lr=0.2",
                                      "--epochs", "3", "--device", "cpu"])
    cfg = config_from_args(args)
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.model.arch, cfg.data.total) == (0.2, 3, "resnet32", None)
    assert parse_set(["data.total=null", "loss.name=kcl"]) == {"data.total": None, "loss.name": "kcl"}


def test_a_bad_device_is_bad_input_not_a_traceback(capsys):
    import pytest

    from trainables.trial import main
    with pytest.raises(SystemExit) as exit_:
        main(["--smoke", "--device", "gpu"])
    assert exit_.value.code == 2 and "device" in capsys.readouterr().err.strip().splitlines()[-1]
