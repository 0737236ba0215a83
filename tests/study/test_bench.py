"""The benchmark command in its tiny configuration: every field present (no timing assertions)."""

import json

import pytest

from study.bench import main, per_anchor_loss
from trainables.losses import contrastive_loss, kcl_mask


def test_tiny_benchmark_writes_every_field(ray_cluster, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--tiny", "--repeats", "1", "--sweep-trials", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"machine", "repeats", "data", "loss", "probe", "sweep", "accel"}
    assert {"trials", "ray_start_included", "sweep_s", "direct_s", "overhead_per_trial_s"} <= set(report["sweep"])
    assert report["sweep"]["trials"] == 2
    assert {"harness_img_s", "dataloader_img_s", "ratio", "batch", "steps", "workers"} <= set(report["data"])
    assert [row["batch"] for row in report["loss"]] == [32, 64]
    assert all({"masked_s", "loop_s", "ratio", "masked_peak_mb", "loop_peak_mb"} <= set(row)
               for row in report["loss"])
    accel = report["accel"]                     # the GPU section's code, run on the CPU here
    assert {"harness_img_s", "dataloader_img_s", "ratio", "step_gflops", "achieved_tflops",
            "peak_matmul_tflops", "mfu", "device_name"} <= set(accel)
    assert accel["mfu"] == pytest.approx(accel["achieved_tflops"] / accel["peak_matmul_tflops"]) and accel["mfu"] > 0
    assert {"cached_s", "recompute_s", "ratio", "cached_acc", "recompute_acc"} <= set(report["probe"])
    assert "ratio" in capsys.readouterr().out


def test_the_loop_reference_computes_the_same_loss():
    import torch
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(16, 8, generator=g, dtype=torch.float64), dim=1)
    mask = kcl_mask(torch.randint(0, 3, (8,), generator=g).repeat(2), 2, g)
    assert torch.allclose(per_anchor_loss(z, mask, 0.2), contrastive_loss(z, mask, 0.2))


def test_peak_memory_counts_live_storages_by_hand():
    import torch

    from study.bench import PeakMemory
    with PeakMemory() as memory:
        a = torch.ones(1000)             # 4000 bytes
        b = a * 2                        # 8000 live: the peak
        del a
        c = (b + 1).view(10, 100)        # b is freed below; the view allocates nothing
        del b
    assert memory.peak == 8000 and memory.live == 4000 and c.numel() == 1000


def test_step_flops_of_resnet18_match_its_published_count():
    import torch

    from study.bench import step_flops
    from trainables.config import TrialConfig
    # CIFAR ResNet-18 is 0.56 G multiply-adds per 32x32 image forward: 1.11 GFLOPs;
    # backward costs about twice the forward, so a training step is ~3.3 GFLOPs per image.
    cfg = TrialConfig.from_flat({"model.arch": "resnet18", "optim.batch_size": 2})
    flops = step_flops(cfg, torch.device("cpu"))      # 4 images (two views of 2), fwd + bwd
    assert 4 * 3.1e9 < flops < 4 * 3.5e9
