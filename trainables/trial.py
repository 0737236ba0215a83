"""One trial of the protocol (Kang et al., ICLR 2021), end to end:

    long-tailed train set -> pretrain encoder f with one loss -> freeze f ->
    linear probes on cached features (long-tailed, and balanced of the same size) ->
    per-class accuracy, many/medium/few and p(V) on the balanced test set.

`python -m trainables.trial [--loss kcl --k 6 ...] [--smoke]` runs one and prints
its TrialResult as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch

from trainables import names
from trainables.config import ProbeConfig, TrialConfig
from trainables.data import Splits, balanced_indices, load_splits, longtail_indices
from trainables.metrics import balancedness, per_class_accuracy, summarize
from trainables.models import build_encoder
from trainables.objectives import build_objective
from trainables.presets import SMOKE, parse_set, resolve
from trainables.pretrain import PretrainOutcome, TrainSet, pretrain
from trainables.probe import extract_features, fit_linear_probe, predict
from trainables.probe_augmented import fit_augmented_probe
from trainables.selection import STRATEGIES, measures, select

@dataclass
class TrialResult:
    """Everything one trial produced. `probes[name]` holds, for each of names.PROBES, a
    names.probe_record: top1, many, medium, few, balancedness, acc_std,
    worst_class_acc, per_class_acc."""
    status: str                               # "ok" or "diverged"
    config: dict                              # resolved, flat dotted keys
    seed: int
    num_classes: int
    class_counts: list[int]                   # long-tailed train images per class index
    class_order: list[int]                    # class_order[r]: class with the r-th largest count
    draw_digest: str = ""                     # names the long-tailed train set (draw_digest)
    probes: dict[str, dict] = field(default_factory=dict)
    pretrain: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    selection: list[dict] = field(default_factory=list)   # the select study's rows (evaluate_selection)
    wall_time_s: float = 0.0
    device: str = "cpu"
    versions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DataPlan:
    """The splits and the index sets one trial trains and probes on (CPU tensors)."""
    splits: Splits
    lt_indices: torch.Tensor
    class_counts: list[int]
    class_order: list[int]
    balanced_indices: torch.Tensor


def draw_digest(cfg: TrialConfig, indices: torch.Tensor) -> str:
    """16 hex digits naming a long-tailed train set: the data settings that make the pool
    (all but where its files are, and the ratio and total that the indices already say) and
    the pool indices drawn [n]. Trials on the same images share it (MLflow groups their runs)."""
    local = {"data_root", "image_root", "cache_dir", "download", "imbalance_ratio", "total"}
    settings = {k: v for k, v in sorted(dataclasses.asdict(cfg.data).items()) if k not in local}
    digest = hashlib.sha256(json.dumps(settings, default=str).encode())
    digest.update(indices.to(torch.int64).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def plan_data(cfg: TrialConfig) -> DataPlan:
    """Load the dataset and draw the long-tailed and balanced train sets.

    Raises ValueError for data settings that cannot be met (a class left empty,
    a total larger than the pool allows), before any training.
    """
    d = cfg.data
    try:
        splits = load_splits(d)
    except FileNotFoundError as e:           # a missing folder or file is bad input too
        raise ValueError(str(e)) from None
    lt, counts, order = longtail_indices(splits, d.imbalance_ratio, d.total, cfg.seed, d.count_power)
    return DataPlan(splits, lt, counts, order, balanced_indices(splits, len(lt), cfg.seed))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_train_set(plan: DataPlan, device: torch.device) -> TrainSet:
    """What the loop reads, moved to the training device once."""
    s = plan.splits
    stat = lambda v: torch.tensor(v, device=device).view(-1, 1, 1).float()  # noqa: E731
    return TrainSet(images=s.pool_x.to(device), labels=s.pool_y.to(device),
                    indices=plan.lt_indices.to(device), val_images=s.val_x.to(device),
                    val_labels=s.val_y.to(device), mean=stat(s.mean), std=stat(s.std),
                    kind=s.kind, num_classes=s.num_classes)


def build_trial_objective(cfg: TrialConfig, image_shape, num_classes: int, device: torch.device,
                          generator: torch.Generator) -> torch.nn.Module:
    """The encoder and its objective (cfg.loss) on `device`, as every trial and the
    benchmark train them. image_shape: (C, H, W) of the dataset's images."""
    encoder = build_encoder(cfg.model.arch, image_shape[0], cfg.model.width, image_shape[-1])
    objective = build_objective(encoder, num_classes, cfg, generator).to(device)
    # channels_last on every device: oneDNN's CPU convolutions run the small CNN's
    # training step 1.7x faster in it (study.bench), cuDNN's bf16 ones use tensor cores.
    objective = objective.to(memory_format=torch.channels_last)
    if device.type == "cuda" and cfg.model.compile:
        objective.encoder.compile()        # in place: parameter names (checkpoints) unchanged
    return objective


def _features(encoder, data: TrainSet, plan: DataPlan) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frozen-encoder features of the whole pool [N, D] and of the test set [T, D],
    and the test labels [T], on the training device."""
    pool = extract_features(encoder, data.images, data.mean, data.std)
    test_x = plan.splits.test_x.to(data.images.device)
    return pool, extract_features(encoder, test_x, data.mean, data.std), plan.splits.test_y.to(pool.device)


def _evaluate_probes(pool, test, test_y, data: TrainSet, plan: DataPlan, cfg: TrialConfig,
                     generator: torch.Generator, encoder: torch.nn.Module) -> dict[str, dict]:
    """Fit both probes (cfg.probe.protocol: on cached pool features, or on the frozen
    encoder's features of augmented views); summarise each on the test set. The
    long-tailed probe trains on the long-tailed set (with class-balanced sampling if
    asked), the balanced one on the balanced subset of the same size (names.PROBES order)."""
    train_sets = [(plan.lt_indices, cfg.probe.balanced_sampling), (plan.balanced_indices, False)]
    results = {}
    for name, (idx, balanced_sampling) in zip(names.PROBES, train_sets):
        idx = idx.to(pool.device)
        if cfg.probe.protocol == "augmented":
            probe = fit_augmented_probe(encoder, data.images[idx], data.labels[idx], data.num_classes, cfg.probe,
                                        data.mean, data.std, generator, balanced_sampling, flip=data.kind != "gray")
        else:
            probe = fit_linear_probe(pool[idx], data.labels[idx], data.num_classes, cfg.probe,
                                     generator, balanced_sampling)
        acc = per_class_accuracy(predict(probe, test), test_y, data.num_classes)
        results[name] = summarize(acc, plan.class_counts, cfg.eval.sigma, cfg.group_rule)
    return results


def evaluate_selection(pool, test, test_y, data: TrainSet, plan: DataPlan, cfg: TrialConfig,
                       generator: torch.Generator) -> list[dict]:
    """Each strategy x budget: select from the long-tailed train pool's features (no
    labels), then reveal the selected labels: their balance (selection.measures), and
    a linear probe trained on the selected images only, scored on the balanced test set."""
    lt = plan.lt_indices.to(pool.device)
    feats, labels = pool[lt], data.labels[lt]
    # the selection's probes are cached ones: with probe.protocol=augmented, the cached defaults
    cached = cfg.probe if cfg.probe.protocol == "cached" else ProbeConfig()
    rows = []
    for budget in cfg.select.budget_list:
        for name in cfg.select.strategy_list:
            knobs = {k: getattr(cfg.select, k) for k in STRATEGIES[name].knobs}
            idx = select(name, feats.cpu(), budget, cfg.seed, **knobs).to(pool.device)
            probe = fit_linear_probe(feats[idx], labels[idx], data.num_classes, cached, generator)
            acc = per_class_accuracy(predict(probe, test), test_y, data.num_classes)
            rows.append(names.selection_record(
                strategy=name, budget=budget, **measures(labels[idx].cpu(), data.num_classes),
                top1=sum(acc) / len(acc), balancedness=balancedness(acc, cfg.eval.sigma),
                worst_class_acc=min(acc), per_class_acc=acc))
    return rows


def _pretrain_summary(outcome, objective) -> dict:
    last = outcome.history[-1] if outcome.history else {}
    return names.pretrain_record(
        epochs_completed=outcome.epochs_completed, final_loss=last.get(names.LOSS),
        final_knn_acc=last.get(names.KNN_ACC), mean_positives=last.get(names.MEAN_POSITIVES),
        images_per_s=outcome.images_seen / outcome.train_seconds if outcome.train_seconds else None,
        train_seconds=outcome.train_seconds, resumed_from_epoch=outcome.resumed_from_epoch,
        compiled=bool(getattr(objective.encoder, "_compiled_call_impl", None)),
        parameters=sum(p.numel() for p in objective.encoder.parameters()))


def run_trial(cfg: TrialConfig, report: Callable[[dict, Callable[[], dict]], None] | None = None,
              resume: dict | None = None, probe_at: Collection[int] = ()) -> TrialResult:
    """Run the whole protocol for one config; report(metrics, state) is called once per
    epoch (state(): the pretraining state to checkpoint, see pretrain.training_state).
    resume: such a state; the trial continues after its epoch. probe_at: epochs whose
    report also carries, under names.RESULT_PAYLOAD, the trial's result as if it ended
    there (probes on the encoder so far, status "stopped"): a scheduler may stop it there.

    Same seed on the CPU gives the same numbers, resumed or not, probed early or not
    (the probes draw from their own generator). A non-finite pretraining loss ends the
    trial with status "diverged" (no probe metrics); it does not raise.
    """
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)                       # initialisation
    device = resolve_device(cfg.device)
    plan = plan_data(cfg)
    data = build_train_set(plan, device)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    s = plan.splits
    objective = build_trial_objective(cfg, s.pool_x.shape[1:], s.num_classes, device, gen)
    outcome = PretrainOutcome()

    def result(status: str) -> TrialResult:
        """The trial's result as it stands, with probes unless it diverged."""
        out = TrialResult(status=status, config=cfg.to_flat(), seed=cfg.seed, num_classes=s.num_classes,
                          class_counts=plan.class_counts, class_order=plan.class_order,
                          draw_digest=draw_digest(cfg, plan.lt_indices), history=list(outcome.history),
                          pretrain=_pretrain_summary(outcome, objective),
                          device=str(device), versions={"torch": torch.__version__})
        if status != "diverged":
            probe_gen = torch.Generator(device).manual_seed(cfg.seed + 1)
            features = _features(objective.encoder, data, plan)
            out.probes = _evaluate_probes(*features, data, plan, cfg, probe_gen, objective.encoder)
            if cfg.select.budget_list:
                out.selection = evaluate_selection(*features, data, plan, cfg, probe_gen)
        out.wall_time_s = time.perf_counter() - start
        return out

    def report_epoch(metrics: dict, state) -> None:
        if metrics[names.EPOCH] in probe_at:
            metrics = {**metrics, names.RESULT_PAYLOAD: json.dumps(result("stopped").to_dict())}
        report(metrics, state)

    pretrain(objective, data, cfg, gen, report_epoch if report and probe_at else report, resume, outcome)
    return result(outcome.status)


# ---------------------------------------------------------------- command line

# Shorthand flags -> config keys (anything else: --set KEY=VALUE).
FLAGS = {"loss": ("loss.name", str), "k": ("loss.k", int), "temperature": ("loss.temperature", float),
         "mode": ("loss.mode", str), "dataset": ("data.dataset", str), "data_root": ("data.data_root", str),
         "imbalance_ratio": ("data.imbalance_ratio", float), "total": ("data.total", int),
         "arch": ("model.arch", str), "epochs": ("optim.epochs", int),
         "batch_size": ("optim.batch_size", int), "lr": ("optim.lr", float),
         "sigma": ("eval.sigma", float), "seed": ("seed", int), "device": ("device", str)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainables.trial", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, (key, typ) in FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, help=f"sets {key}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set probe.epochs=50 (repeatable)")
    p.add_argument("--smoke", action="store_true", help="tiny data and model: seconds on a CPU")
    p.add_argument("--download", action="store_true", help="cifar: download and checksum into --data-root")
    p.add_argument("--output", help="also write the JSON result to this file")
    return p


def config_from_args(args: argparse.Namespace) -> TrialConfig:
    """The flat config by trainables.presets.resolve: --smoke, the --dataset preset,
    --set, then the shorthand flags (later wins)."""
    flags = {key: getattr(args, name) for name, (key, _) in FLAGS.items() if name != "dataset"}
    flags["data.download"] = True if args.download else None
    sets = parse_set(args.set)
    device = str(flags["device"] or sets.get("device", "auto"))       # checked by from_flat below
    gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    flat = resolve(sets, flags, budget=SMOKE if args.smoke else None,
                   dataset=args.dataset, smoke=args.smoke, gpu=gpu)
    return TrialConfig.from_flat(flat)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        plan_data(cfg)                    # bad data settings fail here, before training
    except ValueError as e:
        parser.error(str(e))              # one line, exit status 2
    progress = lambda m, state: print(json.dumps(m), file=sys.stderr, flush=True)  # noqa: E731
    result = json.dumps(run_trial(cfg, progress).to_dict(), indent=2)
    print(result)
    if args.output:
        with open(args.output, "w") as f:
            f.write(result + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
