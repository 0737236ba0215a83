"""The benchmark command in its tiny configuration: every field present (no timing assertions)."""

import json

from study.bench import main, per_anchor_loss
from trainables.losses import contrastive_loss, kcl_mask


def test_tiny_benchmark_writes_every_field(ray_cluster, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--tiny", "--repeats", "1", "--sweep-trials", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"machine", "repeats", "data", "loss", "probe", "sweep"}
    assert {"trials", "ray_start_s", "sweep_s", "direct_s", "overhead_per_trial_s"} <= set(report["sweep"])
    assert report["sweep"]["trials"] == 2
    assert {"harness_img_s", "dataloader_img_s", "ratio", "batch", "steps", "workers"} <= set(report["data"])
    assert [row["batch"] for row in report["loss"]] == [32, 64]
    assert all({"masked_s", "loop_s", "ratio"} <= set(row) for row in report["loss"])
    assert {"cached_s", "recompute_s", "ratio", "cached_acc", "recompute_acc"} <= set(report["probe"])
    assert "ratio" in capsys.readouterr().out


def test_the_loop_reference_computes_the_same_loss():
    import torch
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(16, 8, generator=g, dtype=torch.float64), dim=1)
    mask = kcl_mask(torch.randint(0, 3, (8,), generator=g).repeat(2), 2, g)
    assert torch.allclose(per_anchor_loss(z, mask, 0.2), contrastive_loss(z, mask, 0.2))
