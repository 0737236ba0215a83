"""`python -m study.bench [--tiny] [--repeats N] [--json FILE]`: side-by-side speed
comparisons, each measured in this one process, median of several repeats.

    data     pretraining images/s of the harness's device-resident batched pipeline
             (two views, contrastive augmentation, forward + backward) against the
             usual way: a torchvision Dataset with per-sample transforms.v2 and a
             DataLoader with workers, same model, batch and augmentation family
    loss     forward + backward of the masked contrastive loss against a per-anchor
             Python loop over the same formula, at batch 256, 512, 1024, with the
             peak tensor memory of each (PeakMemory, any device)
    probe    the cached-feature linear probe against re-running the frozen encoder
             every probe epoch, with both probes' accuracy

    sweep    wall time of N smoke trials under the whole sweep against the same
             trials' run_trial time in this process: seconds of overhead per trial

    accel    on a GPU: ResNet-18 (CIFAR stem) at batch 512 in bf16 and channels_last,
             harness against the DataLoader reference (8 workers), and the model-FLOPs
             utilisation (FLOPs counted by torch.utils.flop_counter) against the
             device's measured bf16 matmul peak. With --tiny and no GPU the same
             code runs on the CPU so that the tests exercise it.
"""

from __future__ import annotations

import argparse
import json
import os
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
from trainables.probe import (
    extract_features,
    fit_linear_probe,
    normalize_images,
    predict,
)


def _median_time(fn, repeats: int) -> float:
    fn()                                                # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------- loss

class PeakMemory:
    """Peak bytes of tensor storage allocated by torch ops inside the block, on any
    device (a TorchDispatchMode: sees every op's outputs; a storage counts from its
    first tensor's creation until its last tensor created here is freed). Inputs and
    views of them are not allocations."""

    def __new__(cls):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        class Mode(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.live, self.peak, self.refs = 0, 0, {}

            def _free(self, key, nbytes):
                self.refs[key] -= 1
                if self.refs[key] == 0:
                    del self.refs[key]
                    self.live -= nbytes

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                import weakref
                out = func(*args, **(kwargs or {}))
                inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                          if isinstance(t, torch.Tensor)}
                for t in tree_flatten(out)[0]:
                    if not isinstance(t, torch.Tensor):
                        continue
                    storage = t.untyped_storage()
                    key, nbytes = storage.data_ptr(), storage.nbytes()
                    if key not in self.refs:
                        if key in inputs:            # a view of, or in place on, an input
                            continue
                        self.refs[key] = 0
                        self.live += nbytes
                        self.peak = max(self.peak, self.live)
                    self.refs[key] += 1
                    weakref.finalize(t, self._free, key, nbytes)
                return out
        return Mode()


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

        def run(loss_fn, z0=z0, mask=mask):
            z = F.normalize(z0.clone().requires_grad_(True), dim=1)
            loss_fn(z, mask, 0.1).backward()
        fast, slow = _median_time(lambda: run(contrastive_loss), repeats), _median_time(lambda: run(per_anchor_loss), repeats)
        peaks = {}
        for name, fn in (("masked", contrastive_loss), ("loop", per_anchor_loss)):
            with PeakMemory() as memory:
                run(fn)
            peaks[f"{name}_peak_mb"] = memory.peak / 2 ** 20
        rows.append({"batch": b, "masked_s": fast, "loop_s": slow, "ratio": slow / fast, **peaks})
    return rows


# ---------------------------------------------------------------- data

def _train_step(cfg: TrialConfig, device: torch.device):
    """(step(x1, x2, y), model): one SupCon step of the config's encoder + head in
    channels_last, and on a GPU in bf16 autocast, as trainables.trial runs it."""
    torch.manual_seed(0)
    encoder = build_encoder(cfg.model.arch, 3, cfg.model.width, 32)
    model = torch.nn.Sequential(encoder, projection_head(encoder.feature_dim, cfg.model.proj_dim)).to(device)
    cuda = device.type == "cuda"
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step(x1, x2, y):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            z = F.normalize(model(torch.cat([x1, x2])), dim=1)
            loss = contrastive_loss(z, supcon_mask(torch.cat([y, y])), 0.3)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step, model


def bench_data(cfg: TrialConfig, steps: int, repeats: int, workers: int, device: torch.device | None = None) -> dict:
    """Images/s through augmentation + forward + backward, both pipelines, same model.

    harness: the pool as uint8 on `device`, batches by index, two batched per-sample
    augmented views (trainables.augment). Reference: a torchvision Dataset with
    per-sample transforms.v2 in DataLoader workers, batches copied to `device`.
    """
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    device = device or torch.device("cpu")
    splits = load_splits(cfg.data)
    batch = cfg.optim.batch_size
    mean = torch.tensor(splits.mean).view(-1, 1, 1).float()
    std = torch.tensor(splits.std).view(-1, 1, 1).float()
    train_step, _ = _train_step(cfg, device)
    images, labels = splits.pool_x.to(device), splits.pool_y.to(device)
    dev_mean, dev_std = mean.to(device), std.to(device)
    g = torch.Generator(device).manual_seed(0)

    def harness():
        for _ in range(steps):
            idx = torch.randint(0, len(labels), (batch,), generator=g, device=device)
            x = images[idx].float() / 255
            views = [(augment(x, "rgb", g) - dev_mean) / dev_std for _ in range(2)]
            train_step(*views, labels[idx])
        _sync(device)

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
                        persistent_workers=workers > 0, drop_last=True, pin_memory=device.type == "cuda")

    def reference():
        for step, (x1, x2, y) in enumerate(loader):
            if step == steps:
                break
            train_step(*(t.to(device, non_blocking=True) for t in (x1, x2, y)))
        _sync(device)

    fast, slow = _median_time(harness, repeats), _median_time(reference, repeats)
    images_done = steps * batch
    return {"arch": cfg.model.arch, "batch": batch, "steps": steps, "workers": workers, "device": str(device),
            "harness_img_s": images_done / fast, "dataloader_img_s": images_done / slow, "ratio": slow / fast}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_flops(device: torch.device, n: int, repeats: int) -> float:
    """Measured peak: FLOP/s of an n x n x n matmul (bf16 on a GPU, float32 on a CPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))

    def run():
        for _ in range(10):
            a @ b
        _sync(device)
    return 10 * 2 * n ** 3 / _median_time(run, repeats)


def step_flops(cfg: TrialConfig, device: torch.device) -> int:
    """Model FLOPs of one training step (two views, forward + backward), counted by
    torch.utils.flop_counter on the real modules (augmentation and loss excluded)."""
    from torch.utils.flop_counter import FlopCounterMode

    _, model = _train_step(cfg, device)
    x = torch.randn(2 * cfg.optim.batch_size, 3, 32, 32, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops()


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
    """Wall time of `trials` smoke trials under the whole sweep (Ray's start unless
    Ray already runs in this process, Tune, Optuna, MLflow, Parquet, the report)
    against the same trials' run_trial times, one after another in this process:
    the difference per trial is what the sweep machinery costs."""
    import tempfile

    from study.runner import loopback_only
    loopback_only(None)                                   # as the sweep's command does, before Ray's import
    import ray

    from analysis.results import load_results
    from study.sweep import main as sweep
    from trainables.config import SMOKE
    from trainables.trial import run_trial

    ray_was_running = ray.is_initialized()
    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        # One trial at a time with every core, as the direct runs below have them
        # (Ray sets a worker's torch threads to its CPUs).
        sweep(["kpcl", "--smoke", "--num-samples", str(trials), "--max-concurrent", "1",
               "--cpus-per-trial", str(os.cpu_count()),
               "--imbalance-levels", "10", "--storage", storage, "--name", "bench"])
        sweep_s = time.perf_counter() - start
        rows = load_results(f"{storage}/bench")
        configs = rows[["loss.k", "loss.temperature"]].to_dict("records")
        in_workers_s = float(rows["wall_time_s"].sum())
    run_trial(TrialConfig.from_flat(SMOKE))              # warm-up: data generation, first kernels
    start = time.perf_counter()
    for knobs in configs:
        run_trial(TrialConfig.from_flat({**SMOKE, **knobs, "data.imbalance_ratio": 10.0}))
    direct_s = time.perf_counter() - start
    return {"trials": trials, "ray_start_included": not ray_was_running, "sweep_s": sweep_s,
            "direct_s": direct_s, "run_trial_in_workers_s": in_workers_s,
            "overhead_per_trial_s": (sweep_s - direct_s) / trials}


# ---------------------------------------------------------------- command

def run(tiny: bool, repeats: int, sweep_trials: int = 0) -> dict:
    flat = {"data.train_per_class": 40 if tiny else 500, "data.val_per_class": 5, "data.test_per_class": 20,
            "model.width": 8 if tiny else 16, "optim.batch_size": 64 if tiny else 128,
            "probe.epochs": 3 if tiny else 30}
    cfg = TrialConfig.from_flat(flat)
    device = torch.device("cpu")
    accel = None
    if torch.cuda.is_available():       # ResNet-18 (CIFAR stem), batch 512, bf16, channels_last
        accel = bench_accel(TrialConfig.from_flat({"model.arch": "resnet18", "optim.batch_size": 512}),
                            torch.device("cuda"), steps=20, repeats=repeats, workers=8, matmul_n=8192)
    elif tiny:                          # the same code on the CPU, so the tests run it
        accel = bench_accel(cfg, device, steps=2, repeats=repeats, workers=0, matmul_n=256)
    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": torch.get_num_threads(), "device": str(device), "torch": torch.__version__},
        "repeats": repeats,
        "data": bench_data(cfg, steps=2 if tiny else 10, repeats=repeats, workers=0 if tiny else 2),
        "loss": bench_loss([32, 64] if tiny else [256, 512, 1024], repeats, device),
        "probe": bench_probe(cfg, repeats),
        "sweep": bench_sweep(sweep_trials) if sweep_trials else None,
        "accel": accel,
    }


def table(report: dict) -> str:
    lines = [f"machine: {report['machine']['processor']}, {report['machine']['cpus']} threads, "
             f"{report['machine']['device']}, torch {report['machine']['torch']}; median of {report['repeats']}"]
    d = report["data"]
    lines.append(f"data+aug   harness {d['harness_img_s']:8.0f} img/s   DataLoader({d['workers']} workers) "
                 f"{d['dataloader_img_s']:8.0f} img/s   ratio {d['ratio']:6.1f}x")
    for row in report["loss"]:
        lines.append(f"loss B={row['batch']:<5d} masked {row['masked_s'] * 1e3:8.2f} ms "
                     f"({row['masked_peak_mb']:.1f} MiB peak)   loop {row['loop_s'] * 1e3:9.2f} ms "
                     f"({row['loop_peak_mb']:.1f} MiB)   ratio {row['ratio']:6.1f}x")
    p = report["probe"]
    lines.append(f"probe      cached {p['cached_s']:8.2f} s (acc {p['cached_acc']:.3f})   re-encode "
                 f"{p['recompute_s']:8.2f} s (acc {p['recompute_acc']:.3f})   ratio {p['ratio']:6.1f}x")
    if report["accel"]:
        a = report["accel"]
        lines.append(f"{a['device_name']}: {a['arch']} batch {a['batch']}: harness {a['harness_img_s']:8.0f} img/s   "
                     f"DataLoader({a['workers']} workers) {a['dataloader_img_s']:8.0f} img/s   ratio {a['ratio']:6.1f}x   "
                     f"MFU {a['mfu']:.1%} ({a['achieved_tflops']:.1f} of a measured {a['peak_matmul_tflops']:.1f} "
                     f"TFLOP/s matmul peak)")
    else:
        lines.append("GPU section: no GPU here, not measured")
    if report["sweep"]:
        w = report["sweep"]
        lines.append(f"sweep      {w['trials']} trials: sweep {w['sweep_s']:.1f} s, run_trial alone "
                     f"{w['direct_s']:.1f} s: {w['overhead_per_trial_s']:.2f} s overhead per trial "
                     f"(one at a time; MLflow store, report{' and Ray start' if w['ray_start_included'] else ''} "
                     f"included)")
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
