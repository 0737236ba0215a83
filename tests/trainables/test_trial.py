import json
import math

import pytest

from trainables.config import TrialConfig
from trainables.presets import SMOKE
from trainables.objectives import LOSSES
from trainables.names import PROBES, RESULT_PAYLOAD
from trainables.trial import main, run_trial

PROBE_KEYS = {"top1", "many", "medium", "few", "balancedness", "acc_std", "worst_class_acc", "per_class_acc"}
# every registered loss, and KCL in both of its modes (the queue in both variants)
VARIANTS = [{"loss.name": name} for name in LOSSES] + [{"loss.name": "kcl", "loss.mode": "queue"},
                                                       {"loss.name": "kcl", "loss.mode": "queue",
                                                        "loss.kcl_variant": "balfeat"}]


def _smoke(**flat):
    return TrialConfig.from_flat({**SMOKE, **flat})


@pytest.mark.parametrize("dataset", ["shapes", "digits"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_smoke_trial_of_every_loss_gives_complete_metrics_in_range(dataset, variant):
    epochs = []
    result = run_trial(_smoke(**{"data.dataset": dataset, **variant}), report=lambda metrics, state: epochs.append(metrics))
    assert result.status == "ok"
    assert [m["epoch"] for m in epochs] == [1, 2] and all(math.isfinite(m["loss"]) for m in epochs)
    assert all(0 <= m["knn_acc"] <= 1 for m in epochs)
    counts = result.class_counts
    assert len(counts) == result.num_classes == 10 and max(counts) / min(counts) == pytest.approx(10, rel=0.25)
    assert counts[result.class_order[0]] == max(counts) and counts[result.class_order[-1]] == min(counts)
    assert set(result.probes) == set(PROBES)
    for probe in result.probes.values():
        assert set(probe) == PROBE_KEYS
        acc = probe["per_class_acc"]
        assert len(acc) == 10 and all(0 <= a <= 1 for a in acc)
        assert probe["top1"] == pytest.approx(sum(acc) / 10)
        assert probe["worst_class_acc"] == min(acc)
        assert 0 < probe["balancedness"] <= 1
    if variant["loss.name"] != "ce":
        # KCL: the other view plus up to k = 6 same-class rows; SimCLR exactly 1. The
        # harness's queue (256 keys, more than this train set) also holds older keys of
        # the anchor's own image, which count as positives too, beyond the k (BalFeat's
        # variant counts them among the k). pkcl (smoke: SimCLR in epoch 1, then clusters)
        # ends with the other view plus up to k rows of the anchor's cluster.
        mean_pos = result.pretrain["mean_positives"]
        expected = {"simclr": mean_pos == 1, "supcon": mean_pos > 1,
                    "kcl": mean_pos > 1 if variant.get("loss.kcl_variant", "harness") == "harness"
                    and variant.get("loss.mode") == "queue" else 1 < mean_pos <= 7,
                    "pkcl": 1 < mean_pos <= 7 and result.history[0]["mean_positives"] == 1}
        assert expected[variant["loss.name"]], mean_pos
    json.dumps(result.to_dict())   # the result is plain data


def test_same_seed_gives_identical_results_and_another_seed_does_not():
    a = run_trial(_smoke(**{"loss.name": "kcl", "seed": 1})).to_dict()
    b = run_trial(_smoke(**{"loss.name": "kcl", "seed": 1})).to_dict()
    c = run_trial(_smoke(**{"loss.name": "kcl", "seed": 2})).to_dict()
    for r in (a, b, c):
        _timeless(r)
    assert a == b
    assert a["probes"] != c["probes"]


def _timeless(result: dict) -> dict:
    """A result without its timings (which differ from run to run)."""
    result.pop("wall_time_s"), result["pretrain"].pop("images_per_s"), result["pretrain"].pop("train_seconds")
    for m in result["history"]:
        m.pop("images_per_s")
    return result


def test_a_rung_epoch_reports_the_trial_as_if_stopped_there_and_changes_nothing_after_it():
    # MO-ASHA's rungs (names.PROBE_AT): the probes run on the encoder at epoch 1 and the
    # report carries that result; the probes draw from their own generator, so the
    # trial then trains and ends exactly as without them
    cfg = _smoke(**{"loss.name": "kcl", "seed": 1, "optim.epochs": 3})
    reports = []
    probed = run_trial(cfg, report=lambda m, state: reports.append(m), probe_at={1}).to_dict()
    plain = run_trial(cfg, report=lambda m, state: None).to_dict()
    assert _timeless(probed) == _timeless(plain)
    assert [RESULT_PAYLOAD in m for m in reports] == [True, False, False]
    early = json.loads(reports[0][RESULT_PAYLOAD])
    assert early["status"] == "stopped" and early["pretrain"]["epochs_completed"] == 1
    assert len(early["history"]) == 1 and set(early["probes"]) == set(PROBES)
    # the epoch-1 encoder, probed, is not the epoch-3 one
    assert early["probes"]["lt"]["per_class_acc"] != probed["probes"]["lt"]["per_class_acc"]
    assert all(0 <= a <= 1 for a in early["probes"]["lt"]["per_class_acc"])


def test_ce_on_balanced_digits_reaches_090_probe_accuracy():
    cfg = TrialConfig.from_flat({"data.dataset": "digits", "data.imbalance_ratio": 1,
                                 "loss.name": "ce", "model.width": 8, "optim.epochs": 8,
                                 "optim.batch_size": 64})
    result = run_trial(cfg)
    assert result.probes["balanced"]["top1"] >= 0.90
    assert result.probes["lt"]["top1"] >= 0.90
    assert result.class_counts == [min(result.class_counts)] * 10


def test_untrained_and_raw_pixel_baselines_run_through_the_same_trial():
    untrained = run_trial(_smoke(**{"optim.epochs": 0}))
    pixels = run_trial(_smoke(**{"model.arch": "pixels", "optim.epochs": 0}))
    for r in (untrained, pixels):
        assert r.status == "ok" and r.history == [] and 0 <= r.probes["balanced"]["top1"] <= 1
    assert pixels.pretrain["parameters"] == 0


def test_a_non_finite_loss_ends_the_trial_as_diverged_without_raising(monkeypatch):
    # A loss that turns NaN (as a diverging run's does); learning rates are bounded, so
    # it cannot be provoked with a huge one any more.
    from trainables.objectives import CrossEntropy
    forward = CrossEntropy.forward
    def nan_loss(self, *args):
        loss, extra = forward(self, *args)
        return loss * float("nan"), extra
    monkeypatch.setattr(CrossEntropy, "forward", nan_loss)
    result = run_trial(_smoke(**{"loss.name": "ce"}))
    assert result.status == "diverged"
    assert result.probes == {} and result.pretrain["epochs_completed"] == 0


def test_cli_prints_the_result_as_json(capsys, tmp_path):
    out = tmp_path / "r.json"
    assert main(["--smoke", "--loss", "simclr", "--set", "probe.epochs=5", "--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["config"]["loss.name"] == "simclr" and printed["config"]["probe.epochs"] == 5
    assert json.loads(out.read_text()) == printed


@pytest.mark.parametrize("argv, words", [
    (["--loss", "triplet"], "loss.name"),
    (["--k", "-1"], "loss.k"),
    (["--temperature", "0"], "loss.temperature"),
    (["--imbalance-ratio", "0.5"], "data.imbalance_ratio"),
    (["--dataset", "mnist"], "data.dataset"),
    (["--set", "loss.kk=2"], "loss.kk"),
    (["--set", "novalue"], "KEY=VALUE"),
    (["--smoke", "--total", "5000"], "head class"),
    (["--smoke", "--imbalance-ratio", "1000"], "no images"),
    (["--k", "two"], "invalid int"),
])
def test_cli_refuses_bad_input_with_exit_2_and_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert words in err
