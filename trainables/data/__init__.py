"""Datasets: a balanced train pool, a balanced validation set and a balanced test
set per dataset, as uint8 tensors; the long-tailed train set is drawn from the pool."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from trainables.data import cifar, digits, imagelist, shapes
from trainables.data.longtail import class_permutation, longtail_counts, select_per_class


@dataclass(frozen=True)
class Splits:
    """One dataset's images (uint8, [N, C, H, W]) and labels (int64, [N]) per split.

    `kind` names the augmentation family ("rgb" or "gray"); mean and std are
    per-channel statistics of the pool in [0, 1] units, for normalisation.
    """
    pool_x: torch.Tensor
    pool_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    kind: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    label_order: bool = False           # CIFAR-LT: head to tail in label order, as in the literature
    natural_imbalance: bool = False     # list datasets: the class profile comes from a list
    profile_counts: tuple[int, ...] = ()  # ... this one (empty: the pool's own counts)

    def pool_per_class(self) -> list[int]:
        return torch.bincount(self.pool_y, minlength=self.num_classes).tolist()


def _shapes(cfg) -> Splits:
    # Three independent draws, so that resizing one split leaves the others unchanged.
    pool = shapes.generate(cfg.train_per_class or 1000, seed=3 * cfg.data_seed)
    val = shapes.generate(cfg.val_per_class if cfg.val_per_class is not None else 50, seed=3 * cfg.data_seed + 1)
    test = shapes.generate(cfg.test_per_class or 200, seed=3 * cfg.data_seed + 2)
    return _splits(pool, val, test, len(shapes.CLASS_NAMES), "rgb")


def _digits(cfg) -> Splits:
    val = cfg.val_per_class if cfg.val_per_class is not None else 10
    pool, val, test = digits.split(val, cfg.test_per_class or 50, cfg.train_per_class, seed=cfg.data_seed)
    return _splits(pool, val, test, 10, "gray")


def _cifar(cfg) -> Splits:
    """The original train set is the pool (the literature's LT subsets are drawn from it
    with n_max = 5,000 / 500); the test set is the balanced original. Validation images
    (data.val_per_class, default 0: none, and no kNN monitor) are held out of the pool,
    which lowers n_max by as many."""
    (x, y), test, num_classes = cifar.load(cfg.dataset, cfg.data_root, cfg.download)
    val_n = cfg.val_per_class or 0
    g = torch.Generator().manual_seed(cfg.data_seed)
    val_idx = torch.cat([(y == c).nonzero().flatten()[torch.randperm(int((y == c).sum()), generator=g)[:val_n]]
                         for c in range(num_classes)]) if val_n else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[val_idx] = False
    return _splits((x[keep], y[keep]), (x[val_idx], y[val_idx]), test, num_classes, "rgb", label_order=True)


def _imagelist(cfg) -> Splits:
    """Train / val / test lists (default train.txt, val.txt, test.txt in data_root); the
    classes are the train list's labels 0..C-1 (imagelist.check_labels)."""
    root = Path(cfg.data_root)
    image_root = Path(cfg.image_root) if cfg.image_root else root
    size = cfg.image_size or 64
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None
    lists = [root / (name or default) for name, default in ((cfg.train_list, "train.txt"),
                                                             (cfg.val_list, "val.txt"), (cfg.test_list, "test.txt"))]
    # together: the val and test labels are checked against the train list's classes
    parts, num_classes = imagelist.load_lists(lists, image_root, size, cache_dir)
    profile = ()
    if cfg.profile_list:
        profile = tuple(imagelist.count_labels(root / cfg.profile_list, num_classes))
    return dataclasses.replace(_splits(*parts, num_classes, "rgb"), natural_imbalance=True,
                               profile_counts=profile)


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images [N, C, H, W] in [0, 1] units, summed in
    chunks so that a large pool is never converted to floats whole."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].double() / 255
        total += x.sum(dim=(0, 2, 3))
        squares += x.pow(2).sum(dim=(0, 2, 3))
    n = images.numel() / images.shape[1]
    mean = total / n
    std = (squares / n - mean.pow(2)).clamp(min=0).sqrt().clamp(min=1e-3)
    return mean, std


def _splits(pool, val, test, num_classes, kind, label_order=False) -> Splits:
    mean, std = _channel_stats(pool[0])
    return Splits(*pool, *val, *test, num_classes=num_classes, kind=kind,
                  mean=tuple(mean.tolist()), std=tuple(std.tolist()), label_order=label_order)


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: its loader, the dataset-specific config keys it reads (the
    others of DATA_KEYS are null in its results), and what data.data_root must hold
    when it needs one."""
    load: Callable[..., Splits]                   # DataConfig -> Splits
    reads: tuple[str, ...] = ("data.imbalance_ratio", "data.total")
    needs_root: str | None = None


# Lists carry their own imbalance (their class profile), drawn at data.count_power.
_LIST_KEYS = ("data.count_power", "data.train_list", "data.val_list", "data.test_list", "data.image_root",
              "data.profile_list", "data.image_size", "data.cache_dir")
_CIFAR = Dataset(_cifar, ("data.imbalance_ratio", "data.total", "data.download"),
                 needs_root="a folder holding the extracted CIFAR files (or --download into it)")
DATASETS = {"shapes": Dataset(_shapes), "digits": Dataset(_digits), "cifar10": _CIFAR, "cifar100": _CIFAR,
            "imagelist": Dataset(_imagelist, _LIST_KEYS,
                                 needs_root="a folder (imagelist needs its image root and list files)")}
DATA_KEYS = {key for dataset in DATASETS.values() for key in dataset.reads}
# The keys that only choose the long-tailed draw, not the images: trials that differ
# only in these share one load per process.
_DRAW_KEYS = {"imbalance_ratio": 1.0, "total": None, "count_power": 1.0}


def load_splits(cfg) -> Splits:
    """The dataset's splits for a DataConfig, built once per process and reused across trials."""
    return _load_cached(dataclasses.replace(cfg, **_DRAW_KEYS))


@functools.lru_cache(maxsize=4)
def _load_cached(cfg) -> Splits:
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[cfg.dataset].load(cfg)


def longtail_indices(splits: Splits, imbalance_ratio: float, total: int | None, seed: int,
                     count_power: float = 1.0) -> tuple[torch.Tensor, list[int], list[int]]:
    """Draw the long-tailed train set from the pool.

    A balanced pool gets the exponential profile, its frequency ranks handed to
    classes in a seeded random order, so a class's frequency is not confounded with
    its difficulty (CIFAR: label order, to match the literature's subsets exactly). A long-tailed pool (a list dataset) keeps
    its own counts, reshaped by count_power.

    Returns:
        indices into the pool [n], class_counts per class index, class_order
        (class_order[r] is the class with the r-th largest count).
    """
    available = splits.pool_per_class()
    if splits.natural_imbalance:
        counts = imagelist.power_counts(list(splits.profile_counts or available), count_power)
        for c, (need, have) in enumerate(zip(counts, available)):
            if need > have:
                raise ValueError(f"data.count_power={count_power} needs {need} images of class {c}; "
                                 f"the train list has {have} (use a fuller train list)")
        order = sorted(range(splits.num_classes), key=lambda c: (-counts[c], c))
        return select_per_class(splits.pool_y, counts, seed), counts, order
    n_max = min(available)
    profile = longtail_counts(n_max, splits.num_classes, imbalance_ratio, total)
    if profile[0] > n_max:
        raise ValueError(f"data.total={total} at imbalance_ratio={imbalance_ratio} needs "
                         f"{profile[0]} images of the head class; the pool has {n_max} per class")
    # CIFAR-LT's standard subsets put class 0 at the head; elsewhere a seeded order.
    order = list(range(splits.num_classes)) if splits.label_order else class_permutation(splits.num_classes, seed)
    counts = [0] * splits.num_classes
    for rank, c in enumerate(order):
        counts[c] = profile[rank]
    return select_per_class(splits.pool_y, counts, seed), counts, order


def balanced_indices(splits: Splits, total: int, seed: int) -> torch.Tensor:
    """A class-balanced subset of the pool with `total` images (remainder to the first
    classes), or, where the rarest class cannot supply total / C (a list dataset's
    own tail), as many per class as the rarest class has."""
    per, extra = divmod(total, splits.num_classes)
    rarest = min(splits.pool_per_class())
    if per + (extra > 0) > rarest:
        per, extra = rarest, 0
    counts = [per + (c < extra) for c in range(splits.num_classes)]
    return select_per_class(splits.pool_y, counts, seed + 1)
