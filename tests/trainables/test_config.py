import dataclasses

import pytest

from trainables.config import TrialConfig, flat_keys
from trainables.presets import SMOKE


def test_defaults_round_trip_through_flat_keys():
    cfg = TrialConfig()
    assert TrialConfig.from_flat(cfg.to_flat()) == cfg
    assert set(cfg.to_flat()) == set(flat_keys())
    assert "loss.k" in flat_keys() and "data.imbalance_ratio" in flat_keys() and "seed" in flat_keys()


def test_from_flat_sets_nested_values_and_keeps_other_defaults():
    cfg = TrialConfig.from_flat({"loss.name": "supcon", "loss.temperature": 0.2,
                                 "data.imbalance_ratio": 50, "seed": 3})
    assert (cfg.loss.name, cfg.loss.temperature, cfg.data.imbalance_ratio, cfg.seed) == ("supcon", 0.2, 50.0, 3)
    assert cfg.loss.k == TrialConfig().loss.k and cfg.optim == TrialConfig().optim
    assert isinstance(cfg.data.imbalance_ratio, float)


def test_integral_floats_become_ints_but_fractions_are_refused():
    assert TrialConfig.from_flat({"loss.k": 4.0}).loss.k == 4
    with pytest.raises(ValueError, match="loss.k"):
        TrialConfig.from_flat({"loss.k": 2.5})


def test_numpy_scalars_are_accepted():
    import numpy as np
    cfg = TrialConfig.from_flat({"loss.k": np.int64(3), "loss.temperature": np.float32(0.5),
                                 "probe.balanced_sampling": np.bool_(True)})
    assert (cfg.loss.k, cfg.loss.temperature, cfg.probe.balanced_sampling) == (3, 0.5, True)
    assert type(cfg.loss.k) is int and type(cfg.probe.balanced_sampling) is bool


def test_queue_mode_belongs_to_kcl_only():
    assert TrialConfig.from_flat({"loss.name": "kcl", "loss.mode": "queue"}).loss.mode == "queue"
    with pytest.raises(ValueError, match="loss.mode"):
        TrialConfig.from_flat({"loss.name": "simclr", "loss.mode": "queue"})


def test_config_is_frozen():
    # A config is a value: rebuilt from its flat keys it is equal, hashes equal, and serves
    # as the same dict key; one nested knob apart it is another value.
    cfg = TrialConfig.from_flat({"loss.name": "supcon", "loss.temperature": 0.2,
                                 "data.imbalance_ratio": 50, "seed": 3})
    again = TrialConfig.from_flat(cfg.to_flat())
    assert again is not cfg and again == cfg and hash(again) == hash(cfg)
    other = TrialConfig.from_flat({**cfg.to_flat(), "loss.temperature": 0.25})
    assert other != cfg
    assert {cfg: "a", again: "b", other: "c"} == {cfg: "b", other: "c"}
    # nothing can change it after construction, neither a top-level field nor a nested section's
    for obj, name, value in ((cfg, "seed", 4), (cfg, "loss", TrialConfig().loss),
                             (cfg.loss, "temperature", 0.5), (cfg.data, "imbalance_ratio", 1.0)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, value)
    assert (cfg.seed, cfg.loss.name, cfg.loss.temperature, cfg.data.imbalance_ratio) == (3, "supcon", 0.2, 50.0)
    assert cfg == again and hash(cfg) == hash(again)


def test_unknown_keys_are_rejected_by_name():
    with pytest.raises(ValueError, match=r"loss\.kk"):
        TrialConfig.from_flat({"loss.kk": 3})
    with pytest.raises(ValueError, match="nonsense"):
        TrialConfig.from_flat({"nonsense": 1})


@pytest.mark.parametrize("key, value, allowed", [
    ("loss.k", -1, ">= 0"),
    ("loss.temperature", 0.0, "> 0"),
    ("loss.temperature", -0.5, "> 0"),
    ("data.imbalance_ratio", 0.5, ">= 1"),
    ("loss.name", "triplet", "one of"),
    ("data.dataset", "mnist", "one of"),
    ("loss.mode", "ring", "one of ('batch', 'queue')"),
    ("loss.kcl_variant", "moco", "one of ('harness', 'balfeat')"),
    ("eval.sigma", 0.0, "> 0"),
    ("optim.lr", 0.0, "> 0"),
    ("optim.epochs", -1, ">= 0"),
    ("probe.balanced_sampling", 1, "true or false"),
    ("seed", "seven", "an integer"),
])
def test_invalid_values_name_the_key_and_the_allowed_range(key, value, allowed):
    with pytest.raises(ValueError) as err:
        TrialConfig.from_flat({key: value})
    assert key in str(err.value) and allowed in str(err.value)


def test_pixels_baseline_must_not_train():
    assert TrialConfig.from_flat({"model.arch": "pixels", "optim.epochs": 0}).model.arch == "pixels"
    with pytest.raises(ValueError, match="optim.epochs"):
        TrialConfig.from_flat({"model.arch": "pixels", "optim.epochs": 3})


def test_smoke_preset_is_a_valid_config():
    cfg = TrialConfig.from_flat(SMOKE)
    assert cfg.optim.epochs <= 3 and cfg.data.train_per_class <= 100


def test_active_only_hides_the_knobs_a_loss_ignores():
    ce = TrialConfig.from_flat({"loss.name": "ce"}).to_flat(active_only=True)
    assert ce["loss.k"] is None and ce["loss.temperature"] is None and ce["optim.lr"] == 0.05
    simclr = TrialConfig.from_flat({"loss.name": "simclr"}).to_flat(active_only=True)
    assert simclr["loss.k"] is None and simclr["loss.temperature"] == 0.3
    kcl = TrialConfig.from_flat({"loss.name": "kcl", "loss.k": 4}).to_flat(active_only=True)
    assert kcl["loss.k"] == 4 and kcl["loss.queue_size"] is None
    queue = TrialConfig.from_flat({"loss.name": "kcl", "loss.mode": "queue"}).to_flat(active_only=True)
    assert queue["loss.queue_size"] == 4096


PKCL_KEYS = {"loss.clusters", "loss.warmup_epochs", "loss.recluster_every", "loss.cluster_method"}


@pytest.mark.parametrize("flat, inactive", [
    ({"loss.name": "ce"}, {"loss.temperature", "model.proj_dim", "loss.k", "loss.mode", "loss.queue_size",
                           "loss.momentum", "loss.kcl_variant", *PKCL_KEYS}),
    ({"loss.name": "supcon"}, {"loss.k", "loss.mode", "loss.queue_size", "loss.momentum", "loss.kcl_variant",
                               *PKCL_KEYS}),
    ({"loss.name": "kcl"}, {"loss.queue_size", "loss.momentum", "loss.kcl_variant", *PKCL_KEYS}),
    ({"loss.name": "kcl", "loss.mode": "queue"}, PKCL_KEYS),
    ({"loss.name": "pkcl"}, {"loss.mode", "loss.queue_size", "loss.momentum", "loss.kcl_variant"}),
])
def test_inactive_loss_keys_follow_what_each_objective_declares(flat, inactive):
    from trainables.objectives import LOSS_KEYS
    cfg = TrialConfig.from_flat(flat)
    assert set(cfg.inactive_keys()) & LOSS_KEYS == inactive
    # shapes reads the imbalance and the total, none of the list or download keys
    assert {"data.download", "data.count_power", "data.train_list"} <= set(cfg.inactive_keys())
    assert not {"data.imbalance_ratio", "data.total"} & set(cfg.inactive_keys())


def test_a_new_loss_is_one_registry_entry(monkeypatch):
    import torch

    from trainables.losses import supcon_mask
    from trainables.models import build_encoder
    from trainables.objectives import LOSSES, BatchContrastive, Loss, build_objective
    with pytest.raises(ValueError, match="loss.name"):
        TrialConfig.from_flat({"loss.name": "allpos"})
    monkeypatch.setitem(LOSSES, "allpos", Loss({"batch": BatchContrastive}, mask=supcon_mask))
    cfg = TrialConfig.from_flat({"loss.name": "allpos", "model.width": 4, "model.proj_dim": 8})
    assert {"loss.k", "loss.mode"} <= set(cfg.inactive_keys()) and "loss.temperature" not in cfg.inactive_keys()
    objective = build_objective(build_encoder("cnn", 3, 4, 32), 10, cfg)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 0, 1, 2])
    loss, n_pos = objective([x, x.flip(-1)], y, torch.arange(4))
    # supcon's positives over both views: the 4 rows of class 0 have 3 each, the 4 others 1: 16 / 8
    assert n_pos == 2.0


# Every numeric knob, one step past its upper bound (trainables.checks.LIMITS): a typo's
# extra zeros or 1e308 is refused here, not hours into a sweep.
_HUGE = {"data.imbalance_ratio": 10_001.0, "data.total": 10_000_001, "data.train_per_class": 10_001,
         "data.val_per_class": 10_001, "data.test_per_class": 10_001, "data.image_size": 513,
         "data.data_seed": 2**32, "model.width": 100_000, "model.proj_dim": 4097, "loss.temperature": 10.5,
         "loss.k": 65_537, "loss.queue_size": 65_537, "optim.epochs": 5001, "optim.batch_size": 8193,
         "optim.lr": 1e308, "optim.weight_decay": 1.5, "probe.epochs": 5001, "probe.batch_size": 65_537,
         "probe.lr": 100.5, "probe.weight_decay": 1.5, "eval.sigma": 10.5, "eval.knn_k": 1001,
         "eval.knn_temperature": 10.5, "select.multiplier": 100.5, "seed": 2**32,
         "data.count_power": 1.5, "loss.momentum": 1.0, "optim.momentum": 1.0, "select.delta": 2.5,
         "probe.momentum": 1.0, "probe.decay": 1.5, "probe.crop_scale": 1.5, "loss.clusters": 100_001,
         "loss.warmup_epochs": 5001, "loss.recluster_every": 5001}


def _numeric_keys() -> set[str]:
    """The flat keys whose field is annotated int or float (or either or None)."""
    import typing

    from trainables.config import _SECTIONS
    classes = {"": TrialConfig, **{f"{name}.": make().__class__ for name, make in _SECTIONS.items()}}
    return {prefix + name for prefix, cls in classes.items() for name, hint in typing.get_type_hints(cls).items()
            if {int, float} & set(typing.get_args(hint) or (hint,))}


def test_every_numeric_key_has_an_upper_bound():
    numeric = _numeric_keys()
    assert numeric == set(_HUGE)          # a new numeric knob needs a bound, and a row here
    for key, value in _HUGE.items():
        with pytest.raises(ValueError, match=f"^{key}=.* is invalid: allowed "):
            TrialConfig.from_flat({key: value})


@pytest.mark.parametrize("key, value, allowed", [
    ("optim.lr", 1e308, "> 0 and <= 10"),
    ("model.width", 100_000, ">= 1 and <= 512 or None"),
    ("optim.batch_size", 10**6, ">= 2 and <= 8192"),
    ("data.image_size", 4096, ">= 8 and <= 512 or None"),
    ("probe.epochs", 10**9, ">= 1 and <= 5000"),
    ("eval.knn_k", 10**6, ">= 1 and <= 1000"),
    ("seed", -1, ">= 0 and <= 4294967295"),
])
def test_bounds_name_both_ends_and_the_bound_itself_is_allowed(key, value, allowed):
    from trainables.checks import LIMITS
    with pytest.raises(ValueError) as err:
        TrialConfig.from_flat({key: value})
    assert str(err.value) == f"{key}={value!r} is invalid: allowed {allowed}"
    limit = {"optim.lr": "lr", "probe.epochs": "epochs", "data.image_size": "data.image_size"}.get(key, key)
    if limit in LIMITS:
        assert TrialConfig.from_flat({key: LIMITS[limit]}).to_flat()[key] == LIMITS[limit]


def test_non_finite_numbers_are_refused_for_every_float_key():
    floats = [k for k, v in TrialConfig().to_flat().items() if isinstance(v, float)]
    assert {"eval.sigma", "optim.lr", "data.imbalance_ratio"} <= set(floats)
    for key in floats:
        for value in (float("nan"), float("inf"), float("-inf"), 10**400):
            with pytest.raises(ValueError) as err:
                TrialConfig.from_flat({key: value})
            assert str(err.value).startswith(f"{key}=") and str(err.value).endswith("allowed a finite number")
    # built directly (not through from_flat), nan still fails: every comparison with nan is false
    from trainables.config import EvalConfig
    with pytest.raises(ValueError, match="eval.sigma=nan is invalid"):
        EvalConfig(sigma=float("nan"))


def test_a_refused_huge_value_is_shortened_in_the_message():
    with pytest.raises(ValueError) as err:
        TrialConfig.from_flat({"optim.epochs": 10**400})
    assert len(str(err.value)) < 120 and str(err.value).startswith("optim.epochs=1000") and "..." in str(err.value)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_accepts_auto_cpu_cuda_and_cuda_n(device):
    assert TrialConfig.from_flat({"device": device}).device == device


@pytest.mark.parametrize("device", ["gpu", "mps", "cuda:", "cuda:-1", "cuda:x", "cuda:0 ", "cpu:0", "CUDA", ""])
def test_other_device_names_are_refused(device):
    with pytest.raises(ValueError) as err:
        TrialConfig.from_flat({"device": device})
    assert str(err.value) == (f"device={device!r} is invalid: allowed 'auto', 'cpu', 'cuda' or 'cuda:N' "
                              "(N a device number >= 0)")


def test_a_single_number_for_a_list_key_is_read_as_that_list():
    # `--set select.budgets=10` arrives as the number 10
    assert TrialConfig.from_flat({"select.budgets": 10}).select.budget_list == [10]
    with pytest.raises(ValueError, match="a string"):
        TrialConfig.from_flat({"select.budgets": True})
