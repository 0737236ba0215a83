"""The one pretraining loop. The loss is the variable: the objective was chosen at
construction (objectives.build_objective), so nothing here branches on it."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from trainables import names
from trainables.augment import augment
from trainables.config import TrialConfig
from trainables.metrics import balancedness, per_class_accuracy
from trainables.probe import extract_features, knn_predict


@dataclass
class TrainSet:
    """What the loop reads, all on the training device.

    images: [N, C, H, W] uint8 (the whole pool); indices: [n] the long-tailed
    train set within it; labels: [N] int64; val_images / val_labels: the
    balanced validation set for the kNN monitor; mean, std: [C, 1, 1];
    kind: the augmentation family.
    """
    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    kind: str
    num_classes: int


@dataclass
class PretrainOutcome:
    status: str = "ok"                      # "ok" or "diverged"
    epochs_completed: int = 0
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0              # optimisation only (no kNN monitor)
    images_seen: int = 0                    # train images (not views) through the loop
    resumed_from_epoch: int = 0             # > 0: continued from a checkpoint of that epoch


def _lr_lambda(cfg: TrialConfig, total_steps: int) -> Callable[[int], float]:
    if cfg.optim.schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


def _autocast(device: torch.device):
    """bf16 mixed precision on a GPU; full precision on the CPU (bf16 is slow there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(objective: nn.Module, cfg: TrialConfig, total_steps: int):
    """(SGD with momentum and weight decay, its per-step cosine or constant schedule)."""
    opt = torch.optim.SGD(objective.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total_steps))


def make_views(x_uint8: torch.Tensor, data: TrainSet, views: int, generator: torch.Generator) -> list[torch.Tensor]:
    """`views` normalised, independently augmented copies of a batch [B, C, H, W] uint8."""
    x = x_uint8.float() / 255
    return [(augment(x, data.kind, generator) - data.mean) / data.std for _ in range(views)]


def train_step(objective: nn.Module, opt, sched, views: list[torch.Tensor], y: torch.Tensor,
               ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimisation step: the objective's loss on the views, backward, SGD, schedule.

    views: list of [B, C, H, W] (objective.views of them); y: [B] labels; ids: [B] pool
    indices. Returns the detached loss and mean positives per anchor (None for CE), both
    still on the device: reading them here would make the host wait every step.
    `study.bench` times this very function.
    """
    with _autocast(views[0].device):
        loss, n_pos = objective(views, y, ids)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.detach(), None if n_pos is None else n_pos.detach()


def knn_monitor(encoder: nn.Module, data: TrainSet, cfg: TrialConfig) -> dict:
    """The epoch's kNN monitor on the balanced validation set: a kNN vote over the train
    set's features predicts it (monitor_record gives the numbers); NaN and no list
    without a validation set (e.g. CIFAR's literature subsets)."""
    if len(data.val_images) == 0:
        return {names.KNN_ACC: math.nan, names.KNN_BALANCEDNESS: math.nan}
    bank = extract_features(encoder, data.images[data.indices], data.mean, data.std)
    queries = extract_features(encoder, data.val_images, data.mean, data.std)
    pred = knn_predict(bank, data.labels[data.indices], queries, data.num_classes,
                       cfg.eval.knn_k, cfg.eval.knn_temperature)
    return monitor_record(pred, data.val_labels, data.num_classes, cfg.eval.sigma)


def monitor_record(pred: torch.Tensor, labels: torch.Tensor, num_classes: int, sigma: float) -> dict:
    """[M] predictions of [M] validation labels -> knn_acc (top-1 over the M images),
    knn_per_class_acc (C accuracies, NaN for a class the set lacks) and
    knn_balancedness = p(V) of the classes it has, with the test metrics' sigma."""
    per_class = per_class_accuracy(pred, labels, num_classes)
    present = [a for a in per_class if not math.isnan(a)]
    return {names.KNN_ACC: float((pred == labels).float().mean()),
            names.KNN_BALANCEDNESS: balancedness(present, sigma) if present else math.nan,
            names.KNN_PER_CLASS: per_class}


def training_state(objective: nn.Module, opt, sched, generator: torch.Generator, out: PretrainOutcome) -> dict:
    """Everything the loop needs to continue exactly after out.epochs_completed epochs:
    the weights and buffers (BN statistics, the KCL queue and momentum encoder), the
    optimiser's momentum, the schedule's position and the one generator that draws
    every permutation, augmentation and positive. Tensors, numbers, lists and dicts
    only, so that torch.load(weights_only=True) reads it back."""
    return {"epoch": out.epochs_completed, "objective": objective.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "generator": generator.get_state(), "history": out.history,
            "train_seconds": out.train_seconds, "images_seen": out.images_seen}


def _restore(state: dict, objective: nn.Module, opt, sched, generator: torch.Generator,
             out: PretrainOutcome) -> None:
    objective.load_state_dict(state["objective"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    out.history = list(state["history"])
    out.epochs_completed = out.resumed_from_epoch = int(state["epoch"])
    out.train_seconds, out.images_seen = float(state["train_seconds"]), int(state["images_seen"])


def run_epoch(objective: nn.Module, opt, sched, data: TrainSet, batch: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over data.indices in batches of `batch` (the last partial one dropped):
    the sums of the steps' losses and mean positives, still on the device."""
    n = len(data.indices)
    loss_sum = torch.zeros((), device=data.images.device)
    pos_sum = torch.zeros((), device=data.images.device)
    perm = data.indices[torch.randperm(n, generator=generator, device=data.images.device)]
    for s in range(n // batch):
        idx = perm[s * batch:(s + 1) * batch]
        views = make_views(data.images[idx], data, objective.views, generator)
        loss, n_pos = train_step(objective, opt, sched, views, data.labels[idx], idx)
        loss_sum += loss
        if n_pos is not None:
            pos_sum += n_pos
    return loss_sum, pos_sum


def pretrain(objective: nn.Module, data: TrainSet, cfg: TrialConfig, generator: torch.Generator,
             report: Callable[[dict, Callable[[], dict]], None] | None = None,
             resume: dict | None = None, out: PretrainOutcome | None = None) -> PretrainOutcome:
    """Train `objective` for cfg.optim.epochs epochs; after each call report(metrics,
    state), where state() returns the training_state to checkpoint. resume: a
    training_state to continue from (the same config's). out: the outcome to fill in.

    Batches are index slices of an on-device permutation of data.indices (the last
    partial batch is dropped); each view is a batched per-sample augmentation. Loss
    and positives are summed on the device and read once per epoch, which is also
    when a non-finite loss stops training with status "diverged".
    """
    out = PretrainOutcome() if out is None else out
    if cfg.optim.epochs == 0:                        # the untrained-encoder baseline
        return out
    batch = min(cfg.optim.batch_size, len(data.indices))
    steps = len(data.indices) // batch
    opt, sched = make_optimizer(objective, cfg, steps * cfg.optim.epochs)
    objective.prepare(data)
    if resume is not None:
        _restore(resume, objective, opt, sched, generator, out)
    objective.train()
    for epoch in range(out.epochs_completed, cfg.optim.epochs):
        start = time.perf_counter()
        objective.start_epoch(epoch, data)           # e.g. pkcl's re-clustering, timed as training
        loss_sum, pos_sum = run_epoch(objective, opt, sched, data, batch, generator)
        mean_loss = float(loss_sum) / steps          # the epoch's one host-device sync
        out.train_seconds += time.perf_counter() - start
        out.images_seen += steps * batch
        if not math.isfinite(mean_loss):
            out.status = "diverged"
            break
        metrics = names.epoch_record(
            epoch + 1, loss=mean_loss, **knn_monitor(objective.encoder, data, cfg),
            lr=sched.get_last_lr()[0], images_per_s=out.images_seen / out.train_seconds,
            mean_positives=float(pos_sum) / steps if objective.views == 2 else None)
        out.history.append(metrics)
        out.epochs_completed = epoch + 1
        if report is not None:
            report(metrics, lambda: training_state(objective, opt, sched, generator, out))
    return out
