"""The published linear evaluation (`probe.protocol=augmented`): a linear classifier on a
frozen encoder's features of crop/flip-augmented training images, drawn anew each epoch,
trained by SGD with momentum and a step-decayed learning rate, on the raw features (no
standardisation). This is BalFeat's main_lincls.py and SupContrast's main_linear.py;
their settings are the presets in trainables.presets.PROBE_PRESETS.

    epoch e (0-based):  lr_e = lr * decay ** #{m in milestones : e >= m}
    one step:           z = f(crop_flip(x)), f frozen in eval mode (BatchNorm's statistics stay)
                        (W, b) <- SGD(lr_e, momentum, weight_decay) on cross_entropy(W z + b, y)

W starts from N(0, 0.01^2) and b from 0 (BalFeat's). The crop is a random resized crop of
area fraction in [crop_scale, 1] and aspect ratio in [3/4, 4/3] (torchvision's
RandomResizedCrop defaults), with a horizontal flip of probability 1/2, both batched on
the device (trainables.augment.crop_flip). The cached probe (trainables.probe) stays the
default: it extracts features once, this one runs the encoder on every batch of every epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainables.augment import crop_flip
from trainables.config import ProbeConfig


def lr_at(cfg: ProbeConfig, epoch: int) -> float:
    """The learning rate of 0-based `epoch`: cfg.lr times cfg.decay per milestone reached."""
    return cfg.lr * cfg.decay ** sum(epoch >= m for m in cfg.milestone_list)


def _order(labels: torch.Tensor, num_classes: int, balanced: bool, generator) -> torch.Tensor:
    """One epoch's order of the train images [n]: a permutation, or with `balanced` n draws
    with replacement at probability proportional to 1 / n_class(label) (as the cached probe)."""
    if balanced:
        weights = 1.0 / torch.bincount(labels, minlength=num_classes).float()[labels]
        return torch.multinomial(weights, len(labels), replacement=True, generator=generator)
    return torch.randperm(len(labels), generator=generator, device=labels.device)


def fit_augmented_probe(encoder: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                        cfg: ProbeConfig, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator,
                        balanced_sampling: bool = False, views: Callable | None = None,
                        flip: bool = True) -> nn.Linear:
    """Train (W, b) on f(views(x)) for cfg.epochs epochs; the encoder is left as it was.

    images: [n, C, H, W] uint8 on the device; labels: [n]; mean, std: [C, 1, 1].
    views(x, generator) -> x': the augmentation of a float batch in [0, 1] (default:
    crop_flip with cfg.crop_scale, flipping only with `flip`: not gray digits). Returns the nn.Linear in eval mode; predict it on the
    encoder's features of un-augmented images (trainables.probe.extract_features).
    """
    views = views or (lambda x, g: crop_flip(x, g, scale=(cfg.crop_scale, 1.0), flip=flip))
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        dim = encoder((images[:1].float() / 255 - mean) / std).shape[1]
    linear = nn.Linear(dim, num_classes).to(images.device)
    nn.init.normal_(linear.weight, std=0.01, generator=generator)
    nn.init.zeros_(linear.bias)
    opt = torch.optim.SGD(linear.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch_size, len(images))
    for epoch in range(cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        order = _order(labels, num_classes, balanced_sampling, generator)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            with torch.no_grad():
                feats = encoder((views(images[idx].float() / 255, generator) - mean) / std).float()
            loss = F.cross_entropy(linear(feats), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    encoder.train(was_training)
    return linear.eval()
