"""Evaluation metrics on a balanced test set: per-class accuracy, group accuracies
and the balancedness p(V) of Kang et al. (ICLR 2021)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from trainables import names


def balancedness(per_class_acc: Sequence[float], sigma: float = 0.1) -> float:
    """p(V) = 1/C^2 * sum_{i,j} exp(-(a_i - a_j)^2 / sigma).

    Args:
        per_class_acc: C accuracies as fractions in [0, 1].
        sigma: kernel width > 0 (0.1 by default; the paper does not state it).
    Returns:
        p(V) in (0, 1]; 1 when every class has the same accuracy.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    a = torch.as_tensor(list(per_class_acc), dtype=torch.float64)
    if a.numel() == 0:
        raise ValueError("balancedness needs at least one class accuracy")
    diff = a[:, None] - a[None, :]
    return float(torch.exp(-diff.pow(2) / sigma).mean())


def per_class_accuracy(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> list[float]:
    """[N] predictions and [N] targets -> C accuracies (NaN for a class absent from target)."""
    correct = torch.bincount(target[pred == target], minlength=num_classes).double()
    total = torch.bincount(target, minlength=num_classes).double()
    return (correct / total).tolist()


# The count thresholds of the literature's many / medium / few (ImageNet-LT, Places-LT,
# iNaturalist): name -> (is_many(n), is_few(n)); medium is the rest. They differ only for
# a class with exactly 20 or exactly 100 train images (code read at the commits named):
#   oltr         many > 100, few < 20: OLTR's code as released (zhmiao/OpenLongTailRecognition-OLTR
#                utils.py before 13be118), Decoupling, BALMS, RIDE, TADE/SADE, PaCo, BCL, TDE, LIFT
#   oltr-master  many >= 100, few <= 20: OLTR's utils.py since 13be118 (2019-08-05)
#   balfeat      many > 100, few <= 20: BalFeat's util.shot_acc (Kang et al. 2021), GLMC
THRESHOLD_RULES = {
    "oltr": (lambda n: n > 100, lambda n: n < 20),
    "oltr-master": (lambda n: n >= 100, lambda n: n <= 20),
    "balfeat": (lambda n: n > 100, lambda n: n <= 20),
}
ALIASES = {"imagenet": "oltr"}                 # the name this rule had first
GROUP_RULES = ("thirds", *THRESHOLD_RULES, *ALIASES)


def class_groups(class_counts: Sequence[int], rule: str = "thirds") -> dict[str, list[int]]:
    """Split class indices into many / medium / few by their train count.

    rule "thirds": count-ranked thirds (head third first; the sizes differ by at most 1).
    rule "oltr" (alias "imagenet"), "oltr-master", "balfeat": the thresholds 100 and 20,
    each with its literature's boundary at exactly 100 and 20 (THRESHOLD_RULES).
    """
    counts, rule = list(class_counts), ALIASES.get(rule, rule)
    if rule == "thirds":
        order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
        size, extra = divmod(len(order), 3)
        sizes = [size + (i < extra) for i in range(3)]
        bounds = [0, sizes[0], sizes[0] + sizes[1], len(order)]
        return {name: sorted(order[bounds[i]:bounds[i + 1]])
                for i, name in enumerate((names.MANY, names.MEDIUM, names.FEW))}
    if rule in THRESHOLD_RULES:
        many, few = THRESHOLD_RULES[rule]
        return {names.MANY: [c for c, n in enumerate(counts) if many(n)],
                names.MEDIUM: [c for c, n in enumerate(counts) if not many(n) and not few(n)],
                names.FEW: [c for c, n in enumerate(counts) if few(n)]}
    raise ValueError(f"unknown group rule {rule!r}; choose one of {GROUP_RULES}")


def summarize(per_class_acc: Sequence[float], class_counts: Sequence[int],
              sigma: float = 0.1, group_rule: str = "thirds") -> dict:
    """Every number reported for one probe, from its per-class test accuracies.

    The test set is balanced, so overall top-1 is the mean of the class accuracies.
    A group with no class (possible with the ImageNet-LT thresholds) gets NaN.
    """
    acc = list(per_class_acc)
    mean = sum(acc) / len(acc)
    groups = class_groups(class_counts, group_rule)
    group_acc = {name: (sum(acc[c] for c in cls) / len(cls) if cls else math.nan)
                 for name, cls in groups.items()}
    return names.probe_record(top1=mean, **group_acc, balancedness=balancedness(acc, sigma),
                              acc_std=math.sqrt(sum((a - mean) ** 2 for a in acc) / len(acc)),
                              worst_class_acc=min(acc), per_class_acc=acc)
