"""A sweep's resolved plan: what to run, where, and with what budget.

`build_plan` turns the parsed command line into a SweepPlan and checks every trial
config it implies (each imbalance level's, with the preset and overrides), so that
bad input fails before Ray starts.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from study.config_checks import check_trial_configs, check_validation_set
from study.flags import check_flags, trial_resources
from study.flags import levels as levels_of
from study.flags import ratio_range as ratio_range_of
from study.studies import STUDIES, budget
from trainables.config import TrialConfig
from trainables.names import sweep_objectives
from trainables.presets import parse_set, resolve

DEFAULT_LEVELS = (1.0, 10.0, 100.0)
MAX_SEED = 2**32 - 1                    # numpy's and torch's seeds
SMOKE_LEVELS = (1.0, 10.0)


class Refused(ValueError):
    """Bad input found only after validation (once Ray started, or in the sweep folder):
    exit 2, one line."""


@dataclass(frozen=True)
class SweepPlan:
    study: str
    name: str
    storage: str                        # absolute, or a bucket URI (study.storage)
    base: dict                          # flat trial config shared by every trial
    levels: list[float] = field(default_factory=list)      # empty in range mode
    ratio_range: tuple[float, float] | None = None
    objectives: list[str] = field(default_factory=list)    # e.g. ["lt/top1", "lt/balancedness"]
    scheduler: str = "none"
    num_samples: int = 1
    seeds: int = 1
    seed: int = 0
    epochs: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    address: str | None = None
    mlflow_uri: str = ""                # resolved; sweep.json holds null for the default store
    optuna_uri: str = ""                # the Optuna studies' storage; likewise (study.optuna_store)
    resume: bool = False
    reuse_actors: bool = True
    max_failures: int = 1               # Tune retries of a failed trial, from its checkpoint
    staging: str = ""                   # a bucket's sweep: the local folder mirroring it (not saved)
    trial_resources: dict = field(default_factory=dict)   # custom Ray resources per trial
    quiet: bool = False                 # --quiet: the summary only (not saved)
    sweep_id: str = ""                  # unique per sweep: whose Optuna studies are whose (older: "")
    confirm: int = 0                    # new seeds per Pareto-optimal search trial (study.confirm)
    cells: list[dict] | None = None     # the study's cells when it started (older sweeps: None)

    @property
    def sweep_dir(self) -> Path:
        """The sweep folder the driver writes: in --storage, or for a bucket its local mirror."""
        return Path(self.staging or self.storage) / self.name

    @property
    def remote(self) -> bool:
        return bool(self.staging)

    @property
    def where(self) -> str:
        """The sweep folder as its user finds it: its path, or its URI in the bucket."""
        return f"{self.storage}/{self.name}" if self.remote else str(self.sweep_dir)

    @property
    def results_dir(self) -> Path:
        return self.sweep_dir / "results"

    @property
    def default_store(self) -> bool:
        """Whether MLflow logs to the store inside the storage folder (moves with it)."""
        return self.mlflow_uri == default_mlflow_uri(self.storage)

    def save(self) -> None:
        """sweep.json: the plan, with the default MLflow store as null, so that a copied or
        moved sweep's resume uses the store where the sweep now is (study.relocate)."""
        from study.storage import publish
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        saved = {**asdict(self), "mlflow_uri": None if self.default_store else self.mlflow_uri,
                 "optuna_uri": None if self.optuna_uri == default_optuna_uri(self.storage) else self.optuna_uri}
        del saved["staging"], saved["quiet"]
        (self.sweep_dir / "sweep.json").write_text(json.dumps(saved, indent=2))
        publish(self.sweep_dir / "sweep.json")


def store_folder(storage: str | Path) -> Path:
    """Where the default MLflow store and its artifacts are: the storage folder, or for
    a bucket (a sqlite file cannot live there) the working directory."""
    from study.storage import is_remote
    return Path.cwd() if is_remote(storage) else Path(storage)


def default_mlflow_uri(storage: str | Path) -> str:
    return f"sqlite:///{store_folder(storage) / 'mlflow.db'}"


def default_optuna_uri(storage: str | Path) -> str:
    return f"sqlite:///{store_folder(storage) / 'optuna.db'}"      # beside the default MLflow store


def _gpu_budget(args) -> bool:
    if args.gpus_per_trial is not None:
        return args.gpus_per_trial > 0
    import torch
    return torch.cuda.is_available()


def _check_not_searched(study, overrides: dict) -> None:
    """--set of a key the sweep sets per trial would be silently overridden."""
    clash = sorted(set(overrides) & study.searched_keys())
    if clash:
        raise ValueError(f"--set {', '.join(clash)}: set per trial by this study, so a fixed value would be "
                         "ignored (levels: --imbalance-levels; seed: --seed; other knobs: a study that "
                         "does not search them, e.g. fig2)")


def _check_same_cells(plan: SweepPlan, study, name: str) -> None:
    """A trial's slot is its number modulo levels x cells: a study whose cells changed since
    the sweep started would send its journaled results to other cells' Optuna studies."""
    if study.space is None:
        return
    cells, slots = study.cell_configs(), max(1, len(plan.levels)) * len(study.cell_configs())
    if (plan.cells is not None and plan.cells != cells) or (plan.cells is None and plan.num_samples % slots):
        raise ValueError(f"--resume {name}: the {plan.study} study's cells changed since this sweep started "
                         f"(now {cells}); its trials would land in other cells' searches. Start a new sweep")


def _resumed(args, storage: str | Path, name: str, staging: str) -> SweepPlan:
    """The saved plan: the search is fixed by it; where it runs may change (another cluster,
    another storage folder after a copy). sweep.json is read as data, and checked."""
    file = Path(staging or storage) / name / "sweep.json"
    try:
        saved = json.loads(file.read_text())
        saved["ratio_range"] = tuple(saved["ratio_range"]) if saved["ratio_range"] else None
        if saved["mlflow_uri"] in (None, default_mlflow_uri(saved["storage"])):
            saved["mlflow_uri"] = default_mlflow_uri(storage)      # the store where the sweep is now
        if saved.get("optuna_uri") in (None, default_optuna_uri(saved["storage"])):
            saved["optuna_uri"] = default_optuna_uri(storage)
        plan = SweepPlan(**{**saved, "storage": str(storage), "resume": True, "address": args.address,
                            "staging": staging, "quiet": args.quiet})
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{file}: not a sweep plan ({e})") from None
    if plan.study != args.study:
        raise ValueError(f"--resume {name}: a {plan.study} sweep, not {args.study}")
    _check_same_cells(plan, STUDIES[plan.study], name)
    from study.journal import FILE, started
    if not started(plan.sweep_dir / FILE) and any(plan.sweep_dir.glob("results/trials/*.parquet")):
        raise ValueError(f"--resume {name}: its rows have no journal.jsonl (a sweep of an older version, or "
                         "the journal was removed); it cannot be continued without repeating trials")
    # the saved plan is checked as the command line was (it is data from a shared folder)
    if not _data_elsewhere(args, plan.base):
        check_trial_configs(STUDIES[plan.study], plan.base, plan.levels or list(plan.ratio_range or ()), plan.seed)
    return plan


def _imbalance(args, base: dict) -> tuple[list[float], tuple[float, float] | None]:
    """(levels, None), or ([], (low, high)) with --imbalance-range."""
    if args.imbalance_range:
        levels, ratio_range = [], ratio_range_of(args.imbalance_range)
    else:
        default = SMOKE_LEVELS if args.smoke else DEFAULT_LEVELS
        levels, ratio_range = levels_of(args.imbalance_levels or ",".join(map(str, default))), None
    if base.get("data.dataset") == "imagelist" and (ratio_range or len(levels) > 1):
        raise ValueError("imagelist takes its imbalance from its list: use one level (--imbalance-levels 1) "
                         "and --set data.count_power=P for the fixed-total series")
    return levels, ratio_range


def _data_elsewhere(args, base: dict) -> bool:
    """With --address, a data root the driver does not have is the worker nodes' business."""
    from trainables.data import DATASETS
    root = base.get("data.data_root")
    return (args.address is not None and DATASETS[base["data.dataset"]].needs_root is not None
            and root is not None and not Path(root).exists())


def _trial_counts(study, args, preset, levels: list[float]) -> tuple[int, int]:
    """(num_samples, seeds): a grid repeats over seeds; a search gets even shares per level x cell."""
    num_samples, seeds = args.num_samples or preset.num_samples, preset.seeds
    if study.space is None:
        return num_samples, args.num_samples or seeds
    shares = max(1, len(levels)) * len(study.cell_configs())
    return num_samples + (-num_samples % shares), seeds          # round up


def build_plan(args, storage: str | Path, name: str, staging: str = "") -> SweepPlan:
    """Resolve the command line into a plan; raise ValueError on anything invalid.

    The trial config comes from trainables.presets.resolve (study base < machine budget
    < --dataset preset < --set < --data-root/--epochs), as for `python -m trainables.trial`."""
    if args.resume:
        return _resumed(args, storage, name, staging)
    study = STUDIES[args.study]
    check_flags(args, study)
    gpu = _gpu_budget(args)
    preset = budget(args.smoke, gpu)
    sets = parse_set(args.set)
    _check_not_searched(study, sets)
    base = resolve(sets, {"data.data_root": args.data_root, "optim.epochs": args.epochs}, base=study.base,
                   budget=preset.config, dataset=args.dataset, smoke=args.smoke, gpu=gpu)
    levels, ratio_range = _imbalance(args, base)
    ratios = levels or list(ratio_range)
    if _data_elsewhere(args, base):       # checked on a worker once joined (study.cluster)
        ratios = []
    cfg = check_trial_configs(study, base, ratios, args.seed) or TrialConfig.from_flat({**base, "seed": args.seed})
    if ratios:
        check_validation_set(args.scheduler, cfg)
    num_samples, seeds = _trial_counts(study, args, preset, levels)
    # the budget's confirmation: searches only, and not select (whose answers pair seeds already)
    confirm = args.confirm if args.confirm is not None else preset.confirm if study.space and study.confirm else 0
    if args.seed + max(num_samples, seeds) + confirm - 1 > MAX_SEED:     # later rounds use seed + r
        raise ValueError(f"--seed {args.seed}: the sweep's later trials would use seeds above {MAX_SEED}")
    return SweepPlan(study=args.study, name=name, storage=str(storage), base=base, levels=levels,
                     ratio_range=ratio_range, objectives=study.objectives or sweep_objectives(args.probe, args.objective),
                     scheduler=args.scheduler, num_samples=num_samples, seeds=seeds, seed=args.seed,
                     epochs=cfg.optim.epochs, cpus_per_trial=args.cpus_per_trial,
                     gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
                     address=args.address, mlflow_uri=args.mlflow_uri or default_mlflow_uri(storage),
                     optuna_uri=args.optuna_storage or default_optuna_uri(storage),
                     reuse_actors=not args.no_reuse_actors, max_failures=args.max_failures, staging=staging,
                     trial_resources=trial_resources(args.trial_resource), quiet=args.quiet,
                     sweep_id=uuid.uuid4().hex, confirm=confirm,
                     cells=study.cell_configs() if study.space is not None else None)

