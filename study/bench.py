"""`python -m study.bench [--tiny] [--repeats N] [--json FILE]`: side-by-side speed
comparisons, each measured in this one process, median of several repeats.

    data     pretraining images/s of the harness's device-resident batched pipeline
             (two views, contrastive augmentation, forward + backward) against the
             usual way: a torchvision Dataset with per-sample transforms.v2 and a
             DataLoader with workers, same model, batch and augmentation family
    loss     forward + backward of the masked contrastive loss against a per-anchor
             Python loop over the same formula, at batch 256, 512, 1024 (peak memory
             on a GPU)
    probe    the cached-feature linear probe against re-running the frozen encoder
             every probe epoch, with both probes' accuracy

    sweep    wall time of N smoke trials under the whole sweep against the same
             trials' run_trial time in this process: seconds of overhead per trial

(A GPU section is not built yet.)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from trainables.augment import augment
from trainables.config import ProbeConfig, TrialConfig
from trainables.data import load_splits
from trainables.losses import contrastive_loss, supcon_mask
from trainables.models import build_encoder, projection_head
from trainables.probe import extract_features, fit_linear_probe, normalize_images, predict


def _median_time(fn, repeats: int) -> float:
    fn()                                                # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------- loss

def per_anchor_loss(z: torch.Tensor, pos_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """The reference: the same equation, one anchor at a time."""
    losses = []
    for i in range(len(z)):
        positives = pos_mask[i].nonzero().flatten()
        if len(positives) == 0:
            continue
        logits = (z[i] @ z.T) / temperature
        others = torch.cat([logits[:i], logits[i + 1:]])
        log_denominator = torch.logsumexp(others, dim=0)
        losses.append(-(logits[positives] - log_denominator).mean())
    return torch.stack(losses).mean()


def bench_loss(batches, repeats: int, device) -> list[dict]:
    rows = []
    for b in batches:
        g = torch.Generator().manual_seed(0)
        z0 = torch.randn(2 * b, 128, generator=g).to(device)
        labels = torch.randint(0, 10, (b,), generator=g).to(device)
        mask = supcon_mask(torch.cat([labels, labels]))

        def run(loss_fn):
            z = F.normalize(z0.clone().requires_grad_(True), dim=1)
            loss_fn(z, mask, 0.1).backward()
        fast, slow = _median_time(lambda: run(contrastive_loss), repeats), _median_time(lambda: run(per_anchor_loss), repeats)
        rows.append({"batch": b, "masked_s": fast, "loop_s": slow, "ratio": slow / fast})
    return rows


# ---------------------------------------------------------------- data

def bench_data(cfg: TrialConfig, steps: int, repeats: int, workers: int) -> dict:
    """Images/s through augmentation + forward + backward, both pipelines, same model."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    splits = load_splits(cfg.data)
    batch = cfg.optim.batch_size
    mean = torch.tensor(splits.mean).view(-1, 1, 1).float()
    std = torch.tensor(splits.std).view(-1, 1, 1).float()
    torch.manual_seed(0)
    encoder = build_encoder(cfg.model.arch, 3, cfg.model.width, 32)
    head = projection_head(encoder.feature_dim, cfg.model.proj_dim)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.01)

    def train_step(x1, x2, y):
        z = F.normalize(head(encoder(torch.cat([x1, x2]))), dim=1)
        loss = contrastive_loss(z, supcon_mask(torch.cat([y, y])), 0.3)
        opt.zero_grad()
        loss.backward()
        opt.step()

    g = torch.Generator().manual_seed(0)

    def harness():
        for _ in range(steps):
            idx = torch.randint(0, len(splits.pool_y), (batch,), generator=g)
            x = splits.pool_x[idx].float() / 255
            views = [(augment(x, "rgb", g) - mean) / std for _ in range(2)]
            train_step(*views, splits.pool_y[idx])

    transform = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.RandomResizedCrop(32, scale=(0.35, 1.0)),
                            v2.RandomHorizontalFlip(), v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                            v2.RandomGrayscale(p=0.2), v2.Normalize(splits.mean, splits.std)])

    class TwoViews(Dataset):
        def __len__(self):
            return len(splits.pool_y)

        def __getitem__(self, i):
            img = splits.pool_x[i]
            return transform(img), transform(img), splits.pool_y[i]

    loader = DataLoader(TwoViews(), batch_size=batch, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=True)

    def reference():
        for step, (x1, x2, y) in enumerate(loader):
            if step == steps:
                break
            train_step(x1, x2, y)

    fast, slow = _median_time(harness, repeats), _median_time(reference, repeats)
    images = steps * batch
    return {"batch": batch, "steps": steps, "workers": workers, "harness_img_s": images / fast,
            "dataloader_img_s": images / slow, "ratio": slow / fast}


# ---------------------------------------------------------------- probe

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

    fast, slow = _median_time(cached, repeats), _median_time(recompute, repeats)
    return {"epochs": probe_cfg.epochs, "images": len(splits.pool_y), "cached_s": fast, "recompute_s": slow,
            "ratio": slow / fast, **results}


# ---------------------------------------------------------------- sweep overhead

def bench_sweep(trials: int) -> dict:
    """Wall time of `trials` smoke trials under the sweep (Ray Tune, Optuna, MLflow,
    Parquet, report) against the same trials' run_trial times, one after another in
    this process: the difference per trial is what the sweep machinery costs."""
    import tempfile

    from analysis.results import load_results
    from study.sweep import main as sweep
    from trainables.config import SMOKE
    from trainables.trial import run_trial

    from study.runner import start_ray

    start = time.perf_counter()
    start_ray(None)                                       # once per sweep: timed on its own
    ray_start_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        sweep(["kpcl", "--smoke", "--num-samples", str(trials), "--max-concurrent", "1",
               "--imbalance-levels", "10", "--storage", storage, "--name", "bench"])
        sweep_s = time.perf_counter() - start
        configs = load_results(f"{storage}/bench")[["loss.k", "loss.temperature"]].to_dict("records")
    run_trial(TrialConfig.from_flat(SMOKE))              # warm-up: data generation, first kernels
    start = time.perf_counter()
    for knobs in configs:
        run_trial(TrialConfig.from_flat({**SMOKE, **knobs, "data.imbalance_ratio": 10.0}))
    direct_s = time.perf_counter() - start
    return {"trials": trials, "ray_start_s": ray_start_s, "sweep_s": sweep_s, "direct_s": direct_s,
            "overhead_per_trial_s": (sweep_s - direct_s) / trials}


# ---------------------------------------------------------------- command

def run(tiny: bool, repeats: int, sweep_trials: int = 0) -> dict:
    flat = {"data.train_per_class": 40 if tiny else 500, "data.val_per_class": 5, "data.test_per_class": 20,
            "model.width": 8 if tiny else 16, "optim.batch_size": 64 if tiny else 128,
            "probe.epochs": 3 if tiny else 30}
    cfg = TrialConfig.from_flat(flat)
    device = torch.device("cpu")
    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": torch.get_num_threads(), "device": str(device), "torch": torch.__version__},
        "repeats": repeats,
        "data": bench_data(cfg, steps=2 if tiny else 10, repeats=repeats, workers=0 if tiny else 2),
        "loss": bench_loss([32, 64] if tiny else [256, 512, 1024], repeats, device),
        "probe": bench_probe(cfg, repeats),
        "sweep": bench_sweep(sweep_trials) if sweep_trials else None,
    }


def table(report: dict) -> str:
    lines = [f"machine: {report['machine']['processor']}, {report['machine']['cpus']} threads, "
             f"{report['machine']['device']}, torch {report['machine']['torch']}; median of {report['repeats']}"]
    d = report["data"]
    lines.append(f"data+aug   harness {d['harness_img_s']:8.0f} img/s   DataLoader({d['workers']} workers) "
                 f"{d['dataloader_img_s']:8.0f} img/s   ratio {d['ratio']:6.1f}x")
    for row in report["loss"]:
        lines.append(f"loss B={row['batch']:<5d} masked {row['masked_s'] * 1e3:8.2f} ms   loop "
                     f"{row['loop_s'] * 1e3:9.2f} ms   ratio {row['ratio']:6.1f}x")
    p = report["probe"]
    lines.append(f"probe      cached {p['cached_s']:8.2f} s (acc {p['cached_acc']:.3f})   re-encode "
                 f"{p['recompute_s']:8.2f} s (acc {p['recompute_acc']:.3f})   ratio {p['ratio']:6.1f}x")
    if report["sweep"]:
        w = report["sweep"]
        lines.append(f"sweep      {w['trials']} trials: sweep {w['sweep_s']:.1f} s, run_trial alone "
                     f"{w['direct_s']:.1f} s: {w['overhead_per_trial_s']:.2f} s overhead per trial "
                     f"(one at a time, report included; Ray's start, {w['ray_start_s']:.1f} s once, not)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="seconds, for the tests: numbers mean nothing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument("--sweep-trials", type=int, default=20,
                        help="tiny trials for the sweep-overhead comparison (0: skip it)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats}: must be >= 1")
    report = run(args.tiny, args.repeats, args.sweep_trials)
    print(table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
