"""`python -m study.bench_results --rows N`: how fast, and in how much memory, a sweep's
results load and report (docs/performance.md, "Results at scale").

It synthesises N realistic trial rows (study.records.results_schema, 100 classes,
20 epochs of history each) into a temporary sweep folder written the way
ParquetSink writes them (one file per trial), then times, each in a fresh
interpreter so that every step's peak memory is its own: load_results from the
per-trial files, analysis.results.compact, load_results from the compacted file,
and the report. Nothing here imports torch; the trials are made up, not trained.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainables import names

CLASSES, EPOCHS = 100, 20
LOSSES, RATIOS = ("ce", "simclr", "kcl", "supcon"), (1.0, 10.0, 100.0)
STEPS = ("load_trials", "compact", "load_compacted", "report")


def _lists(matrix: np.ndarray) -> pa.ListArray:
    """Rows of a 2-D array as one Arrow list column (no Python loop over rows)."""
    offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel()))


def _probe_columns(acc: np.ndarray, counts: np.ndarray) -> dict:
    """One probe's scalar columns computed from its per-class accuracies, as a trial does."""
    head, tail = counts > 100, counts < 20
    diff = acc[:, :, None] - acc[:, None, :]
    return {names.TOP1: acc.mean(1), names.MANY: acc[:, head].mean(1),
            names.MEDIUM: acc[:, ~head & ~tail].mean(1), names.FEW: acc[:, tail].mean(1),
            names.BALANCEDNESS: np.exp(-np.square(diff) / 0.1).mean((1, 2)),
            names.ACC_STD: acc.std(1), names.WORST_CLASS_ACC: acc.min(1), names.PER_CLASS: acc}


def trial_table(n: int, start: int = 0, sweep: str = "bench") -> pa.Table:
    """Trial rows start .. start + n - 1 of results_schema: mostly ok, some stopped, a few errors.
    (p(V) makes a C x C matrix per row: callers keep n to a few thousand.)"""
    from study.records import results_schema
    schema, rng = results_schema(), np.random.default_rng(start)
    ratio = np.array(RATIOS)[rng.integers(0, len(RATIOS), n)]
    counts = np.maximum(1, (500 * 100.0 ** (-np.arange(CLASSES) / (CLASSES - 1)))).astype(np.int64)
    status = rng.choice(["ok", "stopped", "error"], n, p=[0.9, 0.07, 0.03])
    cols = {"trial_id": [f"t{i:06d}" for i in range(start, start + n)], "study": ["kpcl"] * n, "sweep": [sweep] * n,
            names.STATUS: status, "error": np.where(status == "error", "RuntimeError: CUDA out of memory", None),
            names.WALL_TIME: rng.uniform(30, 90, n), "device_used": ["cpu"] * n, "git_commit": ["abc1234"] * n,
            "versions": ['{"torch": "2.4", "ray": "2.40"}'] * n, "num_classes": np.full(n, CLASSES),
            "class_counts": _lists(np.tile(counts, (n, 1))),
            "class_order": _lists(np.argsort(rng.random((n, CLASSES)), axis=1)),
            "loss.name": np.array(LOSSES)[rng.integers(0, len(LOSSES), n)], "data.dataset": ["shapes"] * n,
            "data.imbalance_ratio": ratio, "loss.temperature": rng.uniform(0.05, 0.5, n),
            "loss.k": rng.integers(1, 10, n), "optim.lr": rng.uniform(0.01, 0.1, n),
            "optim.weight_decay": np.full(n, 5e-4), "eval.sigma": np.full(n, 0.1), "seed": rng.integers(0, 5, n)}
    for probe in names.PROBES:
        base = rng.uniform(0.5, 0.9, (n, 1)) - 0.1 * np.log10(ratio)[:, None] * (1 - counts / counts.max())
        acc = np.clip(base + rng.normal(0, 0.05, (n, CLASSES)), 0, 1)
        for metric, values in _probe_columns(acc, counts).items():
            cols[names.probe_metric(probe, metric)] = _lists(values) if values.ndim == 2 else values
    arrays = [pa.array(cols[f.name], type=f.type) if f.name in cols and not isinstance(cols[f.name], pa.Array)
              else cols.get(f.name, pa.nulls(n, f.type)) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def history_table(trial_ids: list[str], seed: int = 0) -> pa.Table:
    """EPOCHS rows per trial: a falling loss, a rising kNN accuracy and its 10 classes'."""
    from study.records import HISTORY_SCHEMA
    rng, n = np.random.default_rng(seed), len(trial_ids) * EPOCHS
    epoch = np.tile(np.arange(1, EPOCHS + 1), len(trial_ids))
    per_class = np.clip(1 - 0.8 / epoch[:, None] + rng.normal(0, 0.05, (n, 10)), 0, 1)
    cols = {"trial_id": np.repeat(trial_ids, EPOCHS), names.EPOCH: epoch,
            names.LOSS: 5.0 / epoch + rng.normal(0, 0.05, n), names.KNN_ACC: per_class.mean(1),
            names.KNN_BALANCEDNESS: np.exp(-(per_class[:, :, None] - per_class[:, None, :]) ** 2 / 0.1).mean((1, 2)),
            names.KNN_PER_CLASS: pa.ListArray.from_arrays(np.arange(0, 10 * n + 1, 10), per_class.ravel()),
            names.LR: 0.05 * np.cos(epoch / EPOCHS), names.IMAGES_PER_S: rng.uniform(800, 900, n),
            names.MEAN_POSITIVES: rng.uniform(5, 7, n)}
    return pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in HISTORY_SCHEMA],
                                schema=HISTORY_SCHEMA)


def synthesise(sweep: Path, rows: int, chunk: int = 2000) -> int:
    """Write `rows` trials into sweep/results/{trials,history}/<id>.parquet, one file per
    trial as ParquetSink writes them; return the bytes written."""
    trials, history = sweep / "results" / "trials", sweep / "results" / "history"
    trials.mkdir(parents=True, exist_ok=True)
    history.mkdir(parents=True, exist_ok=True)
    for start in range(0, rows, chunk):
        table = trial_table(min(chunk, rows - start), start, sweep.name)
        ids = table["trial_id"].to_pylist()
        epochs = history_table(ids, start)
        for i, trial_id in enumerate(ids):
            pq.write_table(table.slice(i, 1), trials / f"{trial_id}.parquet")
            pq.write_table(epochs.slice(i * EPOCHS, EPOCHS), history / f"{trial_id}.parquet")
    return sum(f.stat().st_size for f in trials.iterdir()) + sum(f.stat().st_size for f in history.iterdir())


def peak_mib() -> float:
    """This process's peak RSS. Linux's VmHWM, because ru_maxrss carries the parent's
    peak across fork and exec (every step would show the synthesis's)."""
    try:
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # KiB on Linux, bytes on macOS


def run_step(step: str, sweep: Path) -> dict:
    """One measured step in this interpreter: seconds, peak RSS, and the peak's growth
    over what the imports alone took."""
    from analysis.report import write_report
    from analysis.results import compact, load_history, load_results
    before, start = peak_mib(), time.perf_counter()
    if step in ("load_trials", "load_compacted"):
        rows = len(load_results(sweep)) + len(load_history(sweep))
    elif step == "compact":
        rows = sum(compact(sweep).values())
    else:
        write_report(sweep, sweep / "report")
        rows = None
    return {"step": step, "seconds": time.perf_counter() - start, "peak_mib": peak_mib(),
            "growth_mib": peak_mib() - before, "rows": rows}


def measure(step: str, sweep: Path) -> dict:
    """run_step in a fresh interpreter, so that its peak memory is its own."""
    out = subprocess.run([sys.executable, "-m", "study.bench_results", "--step", step, str(sweep)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(rows: int, folder: Path) -> list[dict]:
    """Synthesise, then each step in order (compaction before the compacted load)."""
    sweep = folder / "bench"
    start = time.perf_counter()
    size = synthesise(sweep, rows)
    print(f"synthesised {rows:,} trials ({size / 2**20:.0f} MiB of per-trial files, history included) "
          f"in {time.perf_counter() - start:.0f} s")
    results = []
    for step in STEPS:
        results.append(measure(step, sweep))
        r = results[-1]
        print(f"{step:15s} {r['seconds']:8.2f} s   peak RSS {r['peak_mib']:7.0f} MiB "
              f"(+{r['growth_mib']:.0f} MiB over the imports)", flush=True)
    by = {r["step"]: r for r in results}
    print(f"ratio load_trials / load_compacted: {by['load_trials']['seconds'] / by['load_compacted']['seconds']:.1f}x")
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study.bench_results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000, help="trials to synthesise (default 10,000)")
    parser.add_argument("--dir", help="folder for the synthetic sweep (default: a temporary one, removed)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)       # internal: one measured step
    parser.add_argument("sweep", nargs="?", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.step:
        print(json.dumps(run_step(args.step, Path(args.sweep))))
        return 0
    if args.rows < 1:
        build_parser().error(f"--rows must be >= 1, got {args.rows}")
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        results = bench(args.rows, Path(folder))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": args.rows, "steps": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
