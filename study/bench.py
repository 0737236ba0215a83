"""`python -m study.bench [--tiny] [--repeats N] [--json FILE]`: side-by-side speed
comparisons, each measured in this one process, median of several repeats.

    data     pretraining images/s of the harness's device-resident batched pipeline
             (two augmented views, then the trial's own train_step: the default KCL
             objective, forward, backward, SGD) against the usual way: a torchvision
             Dataset with per-sample transforms.v2 and a DataLoader with workers,
             feeding the same train_step (study/bench_pipeline.py)
    loss     forward + backward of the masked contrastive loss against a per-anchor
             Python loop over the same formula, at batch 256, 512, 1024, with the
             peak tensor memory of each (PeakMemory, any device)
    probe    the cached-feature linear probe against re-running the frozen encoder
             every probe epoch, and against the augmented probe (probe.protocol=augmented),
             with the probes' accuracy

    sweep    wall time of N smoke trials under the whole sweep against the same
             trials' run_trial time in this process: seconds of overhead per trial

    --search the same small kpcl study --repeats times with --scheduler none and
             moasha: hypervolume of each level's front against the trial-epochs and
             wall time spent (study/bench_search.py; minutes, not in the default run)

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
import sys
import time

import torch

from study.bench_kernels import bench_loss
from study.bench_pipeline import bench_accel, bench_data, bench_probe
from trainables.config import TrialConfig
from trainables import names


def bench_sweep(trials: int) -> dict:
    """Wall time of `trials` smoke trials under the whole sweep (Ray's start unless
    Ray already runs in this process, Tune, Optuna, MLflow, Parquet, the report)
    against the same trials' run_trial times, one after another in this process:
    the difference per trial is what the sweep machinery costs."""
    import tempfile

    from study.sweep import configure_environment
    configure_environment(None)                           # as the sweep's command does, before Ray's import
    import ray

    from analysis.results import load_results
    from study.sweep import main as sweep
    from trainables.presets import SMOKE
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
        in_workers_s = float(rows[names.WALL_TIME].sum())
    run_trial(TrialConfig.from_flat(SMOKE))              # warm-up: data generation, first kernels
    start = time.perf_counter()
    for knobs in configs:
        run_trial(TrialConfig.from_flat({**SMOKE, **knobs, "data.imbalance_ratio": 10.0}))
    direct_s = time.perf_counter() - start
    return {"trials": trials, "ray_start_included": not ray_was_running, "sweep_s": sweep_s,
            "direct_s": direct_s, "run_trial_in_workers_s": in_workers_s,
            "overhead_per_trial_s": (sweep_s - direct_s) / trials}


def cpu_config(tiny: bool = True) -> TrialConfig:
    """The CPU comparisons' config: seconds with tiny, else a default-sized CNN trial."""
    return TrialConfig.from_flat({
        "data.train_per_class": 40 if tiny else 500, "data.val_per_class": 5, "data.test_per_class": 20,
        "model.width": 8 if tiny else 16, "optim.batch_size": 64 if tiny else 128,
        "probe.epochs": 3 if tiny else 30})


def run(tiny: bool, repeats: int, sweep_trials: int = 0) -> dict:
    cfg = cpu_config(tiny)
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
    lines.append(f"probe      cached {p['cached_s']:8.2f} s   augmented (crop/flip views, SGD) {p['augmented_s']:8.2f} s "
                 f"(acc {p['augmented_acc']:.3f})   ratio {p['augmented_ratio']:6.1f}x   ({p['epochs']} epochs each)")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="seconds, for the tests: numbers mean nothing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument("--sweep-trials", type=int, default=20,
                        help="tiny trials for the sweep-overhead comparison (0: skip it)")
    parser.add_argument("--search", action="store_true",
                        help="instead: the same small kpcl study --repeats times with --scheduler none and "
                        "moasha, hypervolume per compute per level (minutes; study/bench_search.py)")
    parser.add_argument("--search-args", default=None, metavar="ARGS",
                        help="the study's sweep flags for --search (default: the bench_search.SEARCH_ARGS)")
    parser.add_argument("--moasha-samples", type=int, default=None, metavar="N",
                        help="--search: MO-ASHA's trial count (default: the plain sweep's), e.g. for equal compute")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats}: must be >= 1")
    if args.search:
        from study import bench_search
        report = bench_search.bench_search(args.repeats, args.search_args or bench_search.SEARCH_ARGS,
                                           args.moasha_samples)
        print(bench_search.table(report))
    else:
        report = run(args.tiny, args.repeats, args.sweep_trials)
        print(table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
