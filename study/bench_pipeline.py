"""The benchmark's pipeline comparisons: the harness's device-resident data path
through the trial's own training step (trainables.pretrain.train_step) against a
DataLoader with per-sample transforms through the same step, and the
cached-feature probe against re-encoding every probe epoch and against the augmented probe."""

from __future__ import annotations

import torch

from study.bench_kernels import matmul_peak_flops, median_time, step_flops, sync
from trainables.config import ProbeConfig, TrialConfig
from trainables.data import load_splits
from trainables.models import build_encoder
from trainables.pretrain import make_optimizer, make_views, train_step
from trainables.probe import extract_features, fit_linear_probe, normalize_images, predict
from trainables.probe_augmented import fit_augmented_probe
from trainables.trial import build_train_set, build_trial_objective, plan_data


def _reference_loader(splits, batch: int, workers: int, pin: bool):
    """The usual way: a torchvision Dataset of two per-sample transforms.v2 views, in a
    DataLoader with workers; yields (x1, x2, y, ids)."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    transform = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.RandomResizedCrop(32, scale=(0.35, 1.0)),
                            v2.RandomHorizontalFlip(), v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                            v2.RandomGrayscale(p=0.2), v2.Normalize(splits.mean, splits.std)])

    class TwoViews(Dataset):
        def __len__(self):
            return len(splits.pool_y)

        def __getitem__(self, i):
            img = splits.pool_x[i]
            return transform(img), transform(img), splits.pool_y[i], i

    return DataLoader(TwoViews(), batch_size=batch, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0, drop_last=True, pin_memory=pin)


def bench_data(cfg: TrialConfig, steps: int, repeats: int, workers: int, device: torch.device | None = None) -> dict:
    """Images/s through augmentation and the trial's training step (cfg's loss, encoder,
    optimiser: trainables.pretrain.train_step), both pipelines, one objective.

    harness: the pool as uint8 on `device`, batches by index, two batched per-sample
    augmented views (trainables.pretrain.make_views). Reference: _reference_loader,
    batches copied to `device`.
    """
    device = device or torch.device("cpu")
    plan = plan_data(cfg)
    data = build_train_set(plan, device)
    g = torch.Generator(device).manual_seed(0)
    torch.manual_seed(0)
    objective = build_trial_objective(cfg, plan.splits.pool_x.shape[1:], plan.splits.num_classes, device, g)
    opt, sched = make_optimizer(objective, cfg, total_steps=10 ** 9)      # a flat stretch of the cosine
    batch = cfg.optim.batch_size

    def harness():
        for _ in range(steps):
            idx = torch.randint(0, len(data.labels), (batch,), generator=g, device=device)
            views = make_views(data.images[idx], data, objective.views, g)
            train_step(objective, opt, sched, views, data.labels[idx], idx)
        sync(device)

    loader = _reference_loader(plan.splits, batch, workers, pin=device.type == "cuda")

    def reference():
        for step, (x1, x2, y, ids) in enumerate(loader):
            if step == steps:
                break
            x1, x2, y, ids = (t.to(device, non_blocking=True) for t in (x1, x2, y, ids))
            train_step(objective, opt, sched, [x1, x2][:objective.views], y, ids)
        sync(device)

    fast, slow = median_time(harness, repeats), median_time(reference, repeats)
    images_done = steps * batch
    return {"arch": cfg.model.arch, "loss": cfg.loss.name, "batch": batch, "steps": steps, "workers": workers,
            "device": str(device), "harness_img_s": images_done / fast, "dataloader_img_s": images_done / slow,
            "ratio": slow / fast}


def bench_accel(cfg: TrialConfig, device: torch.device, steps: int, repeats: int, workers: int,
                matmul_n: int) -> dict:
    """The GPU section: images/s of the harness against the DataLoader reference on
    `device`, and model-FLOPs utilisation against the device's measured matmul peak."""
    data = bench_data(cfg, steps, repeats, workers, device)
    flops = step_flops(cfg, device)
    peak = matmul_peak_flops(device, matmul_n, repeats)
    achieved = flops * data["harness_img_s"] / cfg.optim.batch_size
    return {**data, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "step_gflops": flops / 1e9, "achieved_tflops": achieved / 1e12,
            "peak_matmul_tflops": peak / 1e12, "mfu": achieved / peak}


def bench_probe(cfg: TrialConfig, repeats: int) -> dict:
    """Cached features vs re-encoding the images every probe epoch (same probe recipe)."""
    splits = load_splits(cfg.data)
    mean = torch.tensor(splits.mean).view(-1, 1, 1).float()
    std = torch.tensor(splits.std).view(-1, 1, 1).float()
    torch.manual_seed(0)
    encoder = build_encoder(cfg.model.arch, 3, cfg.model.width, 32).eval()
    probe_cfg = cfg.probe
    results = {}

    def cached():
        feats = extract_features(encoder, splits.pool_x, mean, std)
        probe = fit_linear_probe(feats, splits.pool_y, splits.num_classes, probe_cfg, torch.Generator().manual_seed(0))
        results["cached_acc"] = float((predict(probe, extract_features(encoder, splits.test_x, mean, std))
                                       == splits.test_y).float().mean())

    def recompute():
        # One epoch at a time: the encoder runs again before each epoch, as a probe that
        # does not cache features must.
        g = torch.Generator().manual_seed(0)
        one_epoch = ProbeConfig(**{**probe_cfg.__dict__, "epochs": 1})
        probe = None
        for _ in range(probe_cfg.epochs):
            with torch.no_grad():
                feats = torch.cat([encoder(normalize_images(splits.pool_x[i:i + 512], mean, std))
                                   for i in range(0, len(splits.pool_x), 512)])
            probe = fit_linear_probe(feats, splits.pool_y, splits.num_classes, one_epoch, g, probe=probe)
        results["recompute_acc"] = float((predict(probe, extract_features(encoder, splits.test_x, mean, std))
                                          == splits.test_y).float().mean())

    def augmented():
        # probe.protocol=augmented for as many epochs: the frozen encoder sees new crop/flip
        # views of every batch (SGD, step decay; the presets only change its numbers)
        aug_cfg = ProbeConfig(**{**probe_cfg.__dict__, "protocol": "augmented", "lr": 0.1, "weight_decay": 0.0})
        probe = fit_augmented_probe(encoder, splits.pool_x, splits.pool_y, splits.num_classes, aug_cfg, mean, std,
                                    torch.Generator().manual_seed(0))
        results["augmented_acc"] = float((predict(probe, extract_features(encoder, splits.test_x, mean, std))
                                          == splits.test_y).float().mean())

    fast, slow, aug = (median_time(f, repeats) for f in (cached, recompute, augmented))
    return {"epochs": probe_cfg.epochs, "images": len(splits.pool_y), "cached_s": fast, "recompute_s": slow,
            "ratio": slow / fast, "augmented_s": aug, "augmented_ratio": aug / fast, **results}


