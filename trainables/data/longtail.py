"""Long-tailed subsets of a balanced pool: the exponential profile of CIFAR-LT,
its fixed-total variant, and seeded selection of the images."""

from __future__ import annotations

import torch


def longtail_counts(n_max: int, num_classes: int, imbalance_ratio: float,
                    total: int | None = None) -> list[int]:
    """Images per class, head first: n_i = int(n_max * ratio ** (-i / (C - 1))).

    With `total` set, the same shape is rescaled so that the counts sum to
    exactly `total` (largest-remainder rounding), which lets the imbalance
    vary at a fixed dataset size; n_max is then ignored.

    Examples: (5000, 10, 100) sums to 12,406 (CIFAR-10-LT), (500, 100, 100) to 10,847.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if imbalance_ratio < 1:
        raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}")
    if num_classes == 1:
        return [int(total if total is not None else n_max)]
    shape = [imbalance_ratio ** (-i / (num_classes - 1)) for i in range(num_classes)]
    if total is None:
        counts = [int(n_max * s) for s in shape]
        if counts[-1] < 1:
            raise ValueError(f"imbalance_ratio={imbalance_ratio} with n_max={n_max} leaves the "
                             f"rarest class with no images")
        return counts
    exact = [total * s / sum(shape) for s in shape]
    if exact[-1] < 1:
        raise ValueError(f"imbalance_ratio={imbalance_ratio} with total={total} leaves the "
                         f"rarest class with no images")
    counts = [int(e) for e in exact]
    # Hand the images lost to rounding to the classes that lost the most.
    by_remainder = sorted(range(num_classes), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def class_permutation(num_classes: int, seed: int) -> list[int]:
    """Seeded order of the classes from head to tail: frequency rank r goes to
    class order[r], so that a class's frequency is not confounded with its difficulty."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(num_classes, generator=g).tolist()


def select_per_class(labels: torch.Tensor, counts: list[int], seed: int) -> torch.Tensor:
    """Indices of counts[c] images of each class c, drawn with a seed.

    The draw is nested: for one seed, a smaller count takes a prefix of the
    images a larger count takes, so a series of subsets differ only in what
    the imbalance removes.

    Args:
        labels: [N] int class labels of the pool (on any device).
        counts: images wanted per class index.
    Returns:
        [sum(counts)] int64 indices into the pool, sorted.
    """
    g = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for c, n in enumerate(counts):
        members = (labels == c).nonzero().flatten()
        if n > len(members):
            raise ValueError(f"class {c} needs {n} images but the pool has {len(members)}")
        chosen.append(members[torch.randperm(len(members), generator=g)[:n]])
    return torch.cat(chosen).sort().values
