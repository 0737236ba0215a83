"""Command-line values checked on their own (whatever the config): counts, ratios,
exclusive flags, custom resources. ValueError with the flag's name on anything wrong."""

from __future__ import annotations

import math


def levels(text: str) -> list[float]:
    try:
        levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--imbalance-levels {text!r}: expected numbers like 1,10,100") from None
    if not levels or any(not x >= 1 or math.isinf(x) for x in levels):
        raise ValueError(f"--imbalance-levels {text!r}: every ratio must be >= 1 (and finite)")
    repeated = sorted({x for x in levels if levels.count(x) > 1})
    if repeated:
        # each level is one Optuna study with an even share of the trials: twice is a mistake
        raise ValueError(f"--imbalance-levels {text!r}: {', '.join(f'{x:g}' for x in repeated)} "
                         "given more than once")
    return levels


def ratio_range(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        lo, hi = float(low), float(high)
    except ValueError:
        raise ValueError(f"--imbalance-range {text!r}: expected LOW:HIGH like 1:100") from None
    if not sep or lo < 1 or hi <= lo:
        raise ValueError(f"--imbalance-range {text!r}: need 1 <= LOW < HIGH")
    return lo, hi


def check_positive(args) -> None:
    for flag, value, minimum in (("--num-samples", args.num_samples, 1), ("--epochs", args.epochs, 1),
                                 ("--max-concurrent", args.max_concurrent, 1),
                                 ("--max-failures", args.max_failures, 0)):
        if value is not None and value < minimum:
            raise ValueError(f"{flag}={value}: must be >= {minimum}")
    if not (0 < args.cpus_per_trial < math.inf):
        raise ValueError(f"--cpus-per-trial={args.cpus_per_trial}: must be > 0 and finite")
    gpus = args.gpus_per_trial
    if gpus is not None and not math.isfinite(gpus):
        raise ValueError(f"--gpus-per-trial={gpus}: must be a finite number")
    if gpus is not None and (gpus < 0 or (gpus > 1 and not float(gpus).is_integer())):
        # Ray shares a GPU among trials only by fractions of one device (0.25: four trials)
        raise ValueError(f"--gpus-per-trial={gpus}: must be a fraction in [0, 1] or a whole number")


def check_flags(args, study) -> None:
    """Flags that are wrong whatever the config: counts, exclusive or unsupported combinations."""
    check_positive(args)
    if args.imbalance_levels and args.imbalance_range:
        raise ValueError("--imbalance-levels and --imbalance-range exclude each other: pick one")
    if args.scheduler == "asha" and args.objective == "multi":
        raise ValueError("--scheduler asha ranks trials on one number (validation kNN accuracy): with "
                         "--objective multi use --scheduler moasha, which ranks them on both objectives")
    if args.confirm is not None and (args.confirm < 0 or args.confirm == 1):
        raise ValueError(f"--confirm {args.confirm}: the number of new seeds per frontier member, 0 (off) or "
                         "at least 2 (an interval needs two)")
    if study.space is None and args.confirm:
        raise ValueError(f"--confirm: {args.study} is a grid whose every configuration runs with every seed "
                         "already (more seeds: --num-samples)")
    if study.space is None and (args.imbalance_range or args.scheduler != "none"):
        raise ValueError(f"{args.study} is a grid, not a search: --imbalance-range and "
                         f"--scheduler {args.scheduler} do not apply")
    if args.scheduler == "moasha" and args.imbalance_range:
        raise ValueError("--scheduler moasha ranks each imbalance level's trials among themselves: use "
                         "--imbalance-levels, not --imbalance-range")
    if args.scheduler == "moasha" and study.objectives:
        raise ValueError(f"--scheduler moasha ranks trials on the kNN monitor's top-1 and p(V); {args.study}'s "
                         f"objectives are its own ({', '.join(study.objectives)})")


def trial_resources(items: list[str]) -> dict:
    """--trial-resource NAME=AMOUNT (repeatable): custom Ray resources every trial asks for,
    e.g. worker=1 to keep trials on the nodes started with --resources '{"worker": N}'."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = math.nan
        if not sep or not key or key in ("CPU", "GPU", "cpu", "gpu") or not 0 < amount < math.inf:
            raise ValueError(f"--trial-resource {item!r}: expected NAME=AMOUNT with AMOUNT > 0 (CPUs and GPUs "
                             "have their own flags)")
        out[key] = amount
    return out
