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

from trainables.augment import augment
from trainables.config import TrialConfig
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


def _lr_lambda(cfg: TrialConfig, total_steps: int) -> Callable[[int], float]:
    if cfg.optim.schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


def _autocast(device: torch.device):
    """bf16 mixed precision on a GPU; full precision on the CPU (bf16 is slow there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def knn_accuracy(encoder: nn.Module, data: TrainSet, cfg: TrialConfig) -> float:
    """Balanced validation accuracy of a kNN vote over the train set's features
    (NaN without a validation set, e.g. CIFAR's literature subsets)."""
    if len(data.val_images) == 0:
        return math.nan
    bank = extract_features(encoder, data.images[data.indices], data.mean, data.std)
    queries = extract_features(encoder, data.val_images, data.mean, data.std)
    pred = knn_predict(bank, data.labels[data.indices], queries, data.num_classes,
                       cfg.eval.knn_k, cfg.eval.knn_temperature)
    return float((pred == data.val_labels).float().mean())


def pretrain(objective: nn.Module, data: TrainSet, cfg: TrialConfig, generator: torch.Generator,
             report: Callable[[dict], None] | None = None) -> PretrainOutcome:
    """Train `objective` for cfg.optim.epochs epochs; call report(metrics) after each.

    Batches are index slices of an on-device permutation of data.indices (the last
    partial batch is dropped); each view is a batched per-sample augmentation. Loss
    and positives are summed on the device and read once per epoch, which is also
    when a non-finite loss stops training with status "diverged".
    """
    out = PretrainOutcome()
    if cfg.optim.epochs == 0:                        # the untrained-encoder baseline
        return out
    device = data.images.device
    n = len(data.indices)
    batch = min(cfg.optim.batch_size, n)
    steps = n // batch
    opt = torch.optim.SGD(objective.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps * cfg.optim.epochs))
    objective.train()
    for epoch in range(cfg.optim.epochs):
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        pos_sum = torch.zeros((), device=device)
        perm = data.indices[torch.randperm(n, generator=generator, device=device)]
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            x = data.images[idx].float() / 255
            views = [(augment(x, data.kind, generator) - data.mean) / data.std
                     for _ in range(objective.views)]
            with _autocast(device):
                loss, n_pos = objective(views, data.labels[idx], idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
            if n_pos is not None:
                pos_sum += n_pos.detach()
        mean_loss = float(loss_sum) / steps          # the epoch's one host-device sync
        out.train_seconds += time.perf_counter() - start
        out.images_seen += steps * batch
        if not math.isfinite(mean_loss):
            out.status = "diverged"
            break
        metrics = {"epoch": epoch + 1, "loss": mean_loss,
                   "knn_acc": knn_accuracy(objective.encoder, data, cfg),
                   "lr": sched.get_last_lr()[0],
                   "images_per_s": out.images_seen / out.train_seconds}
        if objective.views == 2:
            metrics["mean_positives"] = float(pos_sum) / steps
        out.history.append(metrics)
        out.epochs_completed = epoch + 1
        if report is not None:
            report(metrics)
    return out
