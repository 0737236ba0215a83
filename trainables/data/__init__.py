"""Datasets: a balanced train pool, a balanced validation set and a balanced test
set per dataset, as uint8 tensors; the long-tailed train set is drawn from the pool."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from trainables.data import digits, shapes
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

    def pool_per_class(self) -> list[int]:
        return torch.bincount(self.pool_y, minlength=self.num_classes).tolist()


def _shapes(train_per_class, val_per_class, test_per_class, data_seed, data_root=None) -> Splits:
    # Three independent draws, so that resizing one split leaves the others unchanged.
    pool = shapes.generate(train_per_class or 1000, seed=3 * data_seed)
    val = shapes.generate(val_per_class or 50, seed=3 * data_seed + 1)
    test = shapes.generate(test_per_class or 200, seed=3 * data_seed + 2)
    return _splits(pool, val, test, len(shapes.CLASS_NAMES), "rgb")


def _digits(train_per_class, val_per_class, test_per_class, data_seed, data_root=None) -> Splits:
    pool, val, test = digits.split(val_per_class or 10, test_per_class or 50, train_per_class,
                                   seed=data_seed)
    return _splits(pool, val, test, 10, "gray")


def _splits(pool, val, test, num_classes, kind) -> Splits:
    x = pool[0].double() / 255
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp(min=1e-3)
    return Splits(*pool, *val, *test, num_classes=num_classes, kind=kind,
                  mean=tuple(mean.tolist()), std=tuple(std.tolist()))


# name -> loader(train_per_class, val_per_class, test_per_class, data_seed, data_root) -> Splits
DATASETS = {"shapes": _shapes, "digits": _digits}


@functools.lru_cache(maxsize=4)
def load_splits(dataset: str, train_per_class=None, val_per_class=None, test_per_class=None,
                data_seed: int = 0, data_root: str | None = None) -> Splits:
    """The dataset's splits, built once per process and reused across trials (CPU tensors)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[dataset](train_per_class, val_per_class, test_per_class, data_seed, data_root)


def longtail_indices(splits: Splits, imbalance_ratio: float, total: int | None,
                     seed: int) -> tuple[torch.Tensor, list[int], list[int]]:
    """Draw the long-tailed train set from the pool.

    Frequency ranks go to classes in a seeded random order (not label order),
    so a class's frequency is not confounded with its difficulty.

    Returns:
        indices into the pool [n], class_counts per class index, class_order
        (class_order[r] is the class with the r-th largest count).
    """
    n_max = min(splits.pool_per_class())
    profile = longtail_counts(n_max, splits.num_classes, imbalance_ratio, total)
    if profile[0] > n_max:
        raise ValueError(f"data.total={total} at imbalance_ratio={imbalance_ratio} needs "
                         f"{profile[0]} images of the head class; the pool has {n_max} per class")
    order = class_permutation(splits.num_classes, seed)
    counts = [0] * splits.num_classes
    for rank, c in enumerate(order):
        counts[c] = profile[rank]
    return select_per_class(splits.pool_y, counts, seed), counts, order


def balanced_indices(splits: Splits, total: int, seed: int) -> torch.Tensor:
    """A class-balanced subset of the pool with `total` images (remainder to the first classes)."""
    per, extra = divmod(total, splits.num_classes)
    counts = [per + (c < extra) for c in range(splits.num_classes)]
    return select_per_class(splits.pool_y, counts, seed + 1)
