"""The benchmark in its tiny configuration: the figures it prints are the ratios of the
times it measured, and its data comparison drives the trial's own training step (no
timing assertions: this machine is shared)."""

import json

import pytest

from study.bench import main
from study.bench_kernels import per_anchor_loss
from trainables.losses import contrastive_loss, kcl_mask


def test_tiny_benchmark_reports_ratios_of_what_it_measured(ray_cluster, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--tiny", "--repeats", "1", "--sweep-trials", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    d, p, w, accel = report["data"], report["probe"], report["sweep"], report["accel"]
    assert d["ratio"] == pytest.approx(d["harness_img_s"] / d["dataloader_img_s"])
    assert d["harness_img_s"] > 0 and d["loss"] == "kcl"          # the default objective, as trials train
    assert [row["batch"] for row in report["loss"]] == [32, 64]
    for row in report["loss"]:
        assert row["ratio"] == pytest.approx(row["loop_s"] / row["masked_s"])
        # the masked loss holds [2B, 2B] logits in float32 at least: 4 * (2B)^2 bytes
        assert row["masked_peak_mb"] * 2 ** 20 >= 4 * (2 * row["batch"]) ** 2
    assert p["ratio"] == pytest.approx(p["recompute_s"] / p["cached_s"])
    assert 0 <= p["cached_acc"] <= 1 and 0 <= p["recompute_acc"] <= 1
    assert p["augmented_ratio"] == pytest.approx(p["augmented_s"] / p["cached_s"]) and 0 <= p["augmented_acc"] <= 1
    assert w["trials"] == 2
    assert w["overhead_per_trial_s"] == pytest.approx((w["sweep_s"] - w["direct_s"]) / 2)
    assert accel["mfu"] == pytest.approx(accel["achieved_tflops"] / accel["peak_matmul_tflops"]) and accel["mfu"] > 0
    # achieved FLOP/s = FLOPs of one step x steps per second
    steps_per_s = accel["harness_img_s"] / accel["batch"]
    assert accel["achieved_tflops"] == pytest.approx(accel["step_gflops"] * 1e9 * steps_per_s / 1e12)
    printed = capsys.readouterr().out
    assert f"ratio {d['ratio']:6.1f}x" in printed


def test_the_data_comparison_times_the_trials_own_train_step(monkeypatch):
    import study.bench_pipeline as pipeline
    import trainables.pretrain
    from study.bench import cpu_config
    calls = []

    def counted(*args, **kwargs):
        calls.append(len(args[3][0]))                       # the batch of the first view
        return trainables.pretrain.train_step(*args, **kwargs)
    assert pipeline.train_step is trainables.pretrain.train_step   # imported, not a copy
    monkeypatch.setattr(pipeline, "train_step", counted)
    cfg = cpu_config()
    pipeline.bench_data(cfg, steps=2, repeats=1, workers=0)
    # harness and reference: a warm-up and one timed repeat, 2 steps each
    assert calls == [cfg.optim.batch_size] * 8


def test_the_loop_reference_computes_the_same_loss():
    import torch
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(16, 8, generator=g, dtype=torch.float64), dim=1)
    mask = kcl_mask(torch.randint(0, 3, (8,), generator=g).repeat(2), 2, g)
    assert torch.allclose(per_anchor_loss(z, mask, 0.2), contrastive_loss(z, mask, 0.2))


def test_peak_memory_counts_live_storages_by_hand():
    import torch

    from study.bench_kernels import PeakMemory
    with PeakMemory() as memory:
        a = torch.ones(1000)             # 4000 bytes
        b = a * 2                        # 8000 live: the peak
        del a
        c = (b + 1).view(10, 100)        # b is freed below; the view allocates nothing
        del b
    assert memory.peak == 8000 and memory.live == 4000 and c.numel() == 1000


def test_step_flops_of_resnet18_match_its_published_count():
    import torch

    from study.bench_kernels import step_flops
    from trainables.config import TrialConfig
    # CIFAR ResNet-18 is 0.56 G multiply-adds per 32x32 image forward: 1.11 GFLOPs;
    # backward costs about twice the forward, so a training step is ~3.3 GFLOPs per image.
    cfg = TrialConfig.from_flat({"model.arch": "resnet18", "optim.batch_size": 2})
    flops = step_flops(cfg, torch.device("cpu"))      # 4 images (two views of 2), fwd + bwd
    assert 4 * 3.1e9 < flops < 4 * 3.5e9


def test_the_search_summary_by_hand():
    # Two repeats per method at one level: curves are (trial-epochs spent, hypervolume so far)
    from study.bench_search import summarize, table

    def run(method, repeat, curve, stopped, wall):
        return {"method": method, "repeat": repeat, "wall_s": wall, "levels": {10.0: {
            "trials": len(curve), "trial_epochs": curve[-1][0], "hypervolume": curve[-1][1],
            "stopped": stopped, "curve": curve}}}
    runs = [run("none", 0, [(9, 0.2), (18, 0.3)], 0, 100.0), run("moasha", 0, [(9, 0.25), (12, 0.31)], 1, 60.0),
            run("none", 1, [(9, 0.1), (18, 0.5)], 0, 110.0), run("moasha", 1, [(3, 0.1), (6, 0.2)], 2, 40.0)]
    row = summarize(runs)[10.0]
    assert row["none"]["hypervolume_mean"] == pytest.approx(0.4)
    assert (row["none"]["hypervolume_min"], row["none"]["hypervolume_max"]) == (0.3, 0.5)
    assert row["moasha"]["trial_epochs"] == pytest.approx(9) and row["none"]["trial_epochs"] == pytest.approx(18)
    assert row["moasha"]["stopped"] == pytest.approx(1.5) and row["moasha"]["wall_s"] == pytest.approx(50)
    # plain's mean is 0.4: neither MO-ASHA repeat's front reached it
    assert row["moasha"]["epochs_to_plain_hypervolume"] == [None, None]
    runs[1]["levels"][10.0]["curve"] = [(9, 0.25), (12, 0.45)]
    assert summarize(runs)[10.0]["moasha"]["epochs_to_plain_hypervolume"] == [12, None]
    text = table({"args": "--smoke", "repeats": 2, "levels": summarize(runs)})
    assert "trial-epochs moasha/none 0.50" in text and "to plain's mean hypervolume: 12, never" in text
