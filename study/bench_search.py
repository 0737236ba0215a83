"""`python -m study.bench --search`: what early stopping buys a multi-objective sweep,
measured side by side. The same small kpcl study runs R times (seeds 0..R-1) with
`--scheduler none` and with `--scheduler moasha`, same trial count, one after another
in this process on one Ray; per imbalance level it reports

- the hypervolume of the final front of the ok trials (test-set lt/top1 and
  lt/balancedness, reference point (0, 0)): mean, min and max over the repeats;
- the trial-epochs (pretrain/epochs_completed summed over every trial, stopped ones
  included) and the sweep's wall time;
- for MO-ASHA, the trial-epochs it had spent, in start order, when its front first
  reached the plain sweeps' mean final hypervolume (None: never).
"""

from __future__ import annotations

import shlex
import tempfile
import time
from pathlib import Path

import numpy as np

from trainables import names

SEARCH_ARGS = "--smoke --epochs 9 --num-samples 12 --imbalance-levels 1,10"
METHODS = ("none", "moasha")
OBJECTIVES = [names.probe_metric(names.LT, names.TOP1), names.probe_metric(names.LT, names.BALANCEDNESS)]
EPOCHS = names.pretrain_column(names.PRETRAIN_EPOCHS)


def bench_search(repeats: int, args: str = SEARCH_ARGS, moasha_samples: int | None = None) -> dict:
    """{"args", "repeats", "runs": [one dict per method x repeat], "levels": per level the
    summary above}. moasha_samples: MO-ASHA's trial count (default: the same as the plain
    sweep's), to compare at about the same compute instead."""
    from study.sweep import configure_environment
    configure_environment(None)                       # as the sweep's command, before Ray's import
    from study.cluster import start_ray
    from study.sweep import main as sweep
    start_ray(None)                                   # once, outside every timed sweep
    runs = []
    with tempfile.TemporaryDirectory() as storage:
        for r in range(repeats):                      # interleaved: the machine's drift hits both
            for method in METHODS:
                name = f"{method}-{r}"
                start = time.perf_counter()
                more = ["--num-samples", str(moasha_samples)] if method == "moasha" and moasha_samples else []
                code = sweep(["kpcl", *shlex.split(args), *more, "--scheduler", method, "--seed", str(r),
                              "--storage", storage, "--name", name])
                if code != 0:
                    raise RuntimeError(f"the {name} sweep exited {code}")
                runs.append({"method": method, "repeat": r, "wall_s": time.perf_counter() - start,
                             **_measure(Path(storage) / name)})
    return {"args": args, "moasha_samples": moasha_samples, "repeats": repeats, "runs": runs,
            "levels": summarize(runs)}


def _measure(sweep_dir: Path) -> dict:
    """Per level of one sweep: trials, trial-epochs, final hypervolume, and the curve
    (trial-epochs spent, hypervolume so far) over its trials in start order."""
    from analysis.frontier import hypervolume
    from analysis.results import load_results
    from study.journal import FILE, read
    rows = load_results(sweep_dir).set_index("trial_id", drop=False)
    order = [t for entry in read(sweep_dir / FILE) for t in entry.trial_ids if t in rows.index]
    levels = {}
    for level, group in rows.loc[order].groupby("data.imbalance_ratio", sort=True):
        spent, curve = 0, []
        for i in range(len(group)):
            spent += int(group[EPOCHS].iloc[i])
            done = group.iloc[:i + 1]
            curve.append((spent, hypervolume(done[done[names.STATUS] == "ok"], OBJECTIVES)))
        levels[float(level)] = {"trials": len(group), "trial_epochs": spent, "hypervolume": curve[-1][1],
                                "stopped": int((group[names.STATUS] == "stopped").sum()), "curve": curve}
    return {"levels": levels}


def summarize(runs: list[dict]) -> dict:
    """Per level: each method's hypervolume (mean, min, max), trial-epochs and wall time
    (means), and MO-ASHA's trial-epochs to the plain sweeps' mean hypervolume."""
    out = {}
    for level in sorted({lv for run in runs for lv in run["levels"]}):
        per = {m: [run for run in runs if run["method"] == m] for m in METHODS}
        row = {}
        for method, method_runs in per.items():
            def mean(key):
                return float(np.mean([run["levels"][level][key] for run in method_runs]))
            hv = [run["levels"][level]["hypervolume"] for run in method_runs]
            row[method] = {"hypervolume_mean": float(np.mean(hv)), "hypervolume_min": min(hv),
                           "hypervolume_max": max(hv), "trial_epochs": mean("trial_epochs"),
                           "stopped": mean("stopped"), "wall_s": float(np.mean([run["wall_s"] for run in method_runs]))}
        target = row["none"]["hypervolume_mean"]
        reached = [next((spent for spent, hv in run["levels"][level]["curve"] if hv >= target), None)
                   for run in per["moasha"]]
        row["moasha"]["epochs_to_plain_hypervolume"] = reached
        out[level] = row
    return out


def table(report: dict) -> str:
    """The side-by-side table, one line per level and method."""
    more = f" (moasha: --num-samples {report['moasha_samples']})" if report.get("moasha_samples") else ""
    lines = [f"search: kpcl {report['args']}{more}, {report['repeats']} repeats per method "
             f"(seeds 0..{report['repeats'] - 1}); "
             f"hypervolume of the ok trials' ({', '.join(OBJECTIVES)}) front above (0, 0); wall time is the "
             "whole sweep's, every level together"]
    for level, row in report["levels"].items():
        for method in METHODS:
            m = row[method]
            line = (f"level {level:g}  {method:<6}  hypervolume {m['hypervolume_mean']:.4f} "
                    f"[{m['hypervolume_min']:.4f}, {m['hypervolume_max']:.4f}]  trial-epochs {m['trial_epochs']:.1f}  "
                    f"stopped {m['stopped']:.1f}  wall {m['wall_s']:.0f} s")
            if method == "moasha":
                reached = ", ".join("never" if e is None else str(e) for e in m["epochs_to_plain_hypervolume"])
                line += f"  trial-epochs to plain's mean hypervolume: {reached}"
            lines.append(line)
        lines.append(f"level {level:g}  ratio   trial-epochs moasha/none "
                     f"{row['moasha']['trial_epochs'] / row['none']['trial_epochs']:.2f}, hypervolume moasha/none "
                     f"{row['moasha']['hypervolume_mean'] / row['none']['hypervolume_mean']:.3f}")
    return "\n".join(lines)
