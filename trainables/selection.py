"""Budgeted selection of images to label from an unlabeled, long-tailed pool.

Every strategy is a pure function of (features, budget, seed, its own knobs):

    features: [N, D] float, the pool's encoder features (L2-normalised here first)
    budget:   B, the number of images to send for labeling (1 <= B <= N)
    returns:  [B] int64, distinct pool indices

No strategy sees labels or the number of classes; the labels are read only after
selection, by `measures`. Distances are Euclidean between L2-normalised features
(in [0, 2]; d^2 = 2 - 2 cos).

    random     B indices uniformly without replacement
    kmeans     k-means with B clusters; the image nearest each centroid
    typiclust  k-means with B clusters; each cluster's most typical image, typicality
               being the inverse mean distance to its k nearest neighbours in the
               cluster (Hacohen et al., ICML 2022, "Active learning on a budget")
    probcover  greedy maximum coverage of balls of radius delta: repeatedly the image
               whose ball covers most uncovered images (Yehuda et al., NeurIPS 2022)
    spread     this harness's own: over-cluster, then farthest-first over the centroids,
               each chosen cluster's most typical image (see `spread_select`)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainables import names


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_select(features: torch.Tensor, budget: int, seed: int) -> torch.Tensor:
    return torch.randperm(len(features), generator=_generator(seed))[:budget]


def kmeans(x: torch.Tensor, k: int, seed: int, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding. x: [N, D]; returns centroids [k, D]
    and assignments [N]. An emptied cluster is re-seeded at the point farthest from
    its centroid, so all k clusters stay non-empty (k <= N distinct points)."""
    g = _generator(seed)
    centroids = x[torch.randint(len(x), (1,), generator=g)]
    for _ in range(1, k):                            # k-means++: far points more likely
        d2 = torch.cdist(x, centroids).min(1).values.pow(2)
        pick = torch.multinomial(d2 + 1e-12, 1, generator=g) if d2.sum() > 0 else \
            torch.randint(len(x), (1,), generator=g)
        centroids = torch.cat([centroids, x[pick]])
    for _ in range(iters):
        dist = torch.cdist(x, centroids)
        assign = dist.argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        new = sums / counts.clamp(min=1)[:, None]
        for empty in (counts == 0).nonzero().flatten().tolist():
            new[empty] = x[dist.min(1).values.argmax()]
        if torch.allclose(new, centroids):
            break
        centroids = new
    return centroids, torch.cdist(x, centroids).argmin(1)


def _nearest_distinct(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """For each centroid in turn, the nearest point not yet taken: [k] distinct indices."""
    dist = torch.cdist(centroids, x)
    taken, out = torch.zeros(len(x), dtype=torch.bool), []
    for row in dist:
        i = int(row.masked_fill(taken, math.inf).argmin())
        taken[i] = True
        out.append(i)
    return torch.tensor(out, dtype=torch.long)


def kmeans_select(features: torch.Tensor, budget: int, seed: int) -> torch.Tensor:
    x = F.normalize(features.float(), dim=1)
    centroids, _ = kmeans(x, budget, seed)
    return _nearest_distinct(x, centroids)


def typicality(x: torch.Tensor, knn: int = 20) -> torch.Tensor:
    """[N] inverse mean distance to each point's min(knn, N - 1) nearest neighbours
    (a single point: typicality 0)."""
    if len(x) < 2:
        return torch.zeros(len(x))
    k = min(knn, len(x) - 1)
    d = torch.cdist(x, x).fill_diagonal_(math.inf)
    return 1 / (d.topk(k, largest=False).values.mean(1) + 1e-8)


def _most_typical(x: torch.Tensor, assign: torch.Tensor, clusters: list[int], knn: int) -> list[int]:
    """The most typical point of each listed cluster (typicality within the cluster)."""
    out = []
    for c in clusters:
        members = (assign == c).nonzero().flatten()
        out.append(int(members[typicality(x[members], knn).argmax()]))
    return out


def typiclust_select(features: torch.Tensor, budget: int, seed: int, knn: int = 20) -> torch.Tensor:
    x = F.normalize(features.float(), dim=1)
    _, assign = kmeans(x, budget, seed)
    return torch.tensor(_most_typical(x, assign, list(range(budget)), knn), dtype=torch.long)


def probcover_select(features: torch.Tensor, budget: int, seed: int, delta: float = 0.6) -> torch.Tensor:
    """Greedy coverage: ball(i) = {j : |x_i - x_j| < delta}; pick the image whose ball
    holds most uncovered images, mark them covered, repeat. Once everything is covered
    (delta too large for the budget), the rest of the budget is drawn at random, as
    in the paper. Memory: the [N, N] ball graph (N = 20,000: 400 MB)."""
    x = F.normalize(features.float(), dim=1)
    balls = (torch.cdist(x, x) < delta).float()                    # [N, N], i covers j
    uncovered = torch.ones(len(x))
    chosen = torch.zeros(len(x), dtype=torch.bool)
    out = []
    for _ in range(budget):
        gain = (balls @ uncovered).masked_fill(chosen, -1)
        i = int(gain.argmax())
        if gain[i] <= 0:
            break
        out.append(i)
        chosen[i] = True
        uncovered *= 1 - balls[i]
    rest = (~chosen).nonzero().flatten()
    fill = rest[torch.randperm(len(rest), generator=_generator(seed))[:budget - len(out)]]
    return torch.cat([torch.tensor(out, dtype=torch.long), fill])


def spread_select(features: torch.Tensor, budget: int, seed: int, multiplier: float = 4.0) -> torch.Tensor:
    """Class balance without labels: spread the budget over the feature space, not its mass.

    Random selection takes each class in proportion to its size, so a long-tailed
    pool gives a long-tailed labeled set; one pick per k-means cluster (kmeans,
    typiclust) still follows the mass, because k-means spends its clusters where the
    images are, and head classes get several each. Here the pool is over-clustered
    into M = ceil(multiplier x B) clusters, which gives a tail class's few images a
    centroid of their own, and B centroids are chosen by farthest-first traversal
    (start at the largest cluster, then repeatedly the centroid farthest from all
    chosen ones): a head class's many adjacent centroids are passed over once one
    of them is chosen, while an isolated tail centroid is taken early. Each chosen
    cluster contributes its most typical image (typiclust's measure). Centroids,
    not images, are traversed, so a single outlier image cannot draw a pick; the
    multiplier trades tail resolution (large) against such noise (small).
    """
    x = F.normalize(features.float(), dim=1)
    m = min(len(x), max(budget, math.ceil(multiplier * budget)))
    centroids, assign = kmeans(x, m, seed)
    distance = torch.cdist(centroids, centroids)
    order = [int(torch.bincount(assign, minlength=m).argmax())]
    nearest = distance[order[0]].clone()                  # each centroid's distance to the chosen set
    while len(order) < budget:
        nearest[order] = -1
        order.append(int(nearest.argmax()))
        nearest = torch.minimum(nearest, distance[order[-1]])
    return torch.tensor(_most_typical(x, assign, order, knn=20), dtype=torch.long)


@dataclass(frozen=True)
class Strategy:
    select: Callable[..., torch.Tensor]
    knobs: dict[str, tuple[float, float]]             # knob -> (low, high) for the search


STRATEGIES = {
    "random": Strategy(random_select, {}),
    "kmeans": Strategy(kmeans_select, {}),
    "typiclust": Strategy(typiclust_select, {}),
    "probcover": Strategy(probcover_select, {"delta": (0.2, 1.2)}),
    "spread": Strategy(spread_select, {"multiplier": (1.0, 8.0)}),
}


def select(name: str, features: torch.Tensor, budget: int, seed: int, **knobs) -> torch.Tensor:
    """Run one strategy; checks that it returned `budget` distinct pool indices."""
    if not 1 <= budget <= len(features):
        raise ValueError(f"budget {budget}: must be in 1..{len(features)} (the pool's size)")
    idx = STRATEGIES[name].select(features, budget, seed, **knobs)
    assert len(idx) == budget and len(torch.unique(idx)) == budget, f"{name} returned duplicates"
    return idx


def measures(selected_labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Balance of a labeled set, from its hidden labels:

    classes_covered: classes with >= 1 image
    imbalance:       max / min count over the covered classes (1 = balanced)
    entropy:         H(p) / log(C) of the label distribution p over all C classes
                     (1 = uniform over every class, 0 = one class)
    """
    counts = torch.bincount(selected_labels, minlength=num_classes).double()
    covered = counts[counts > 0]
    p = covered / covered.sum()
    return {names.CLASSES_COVERED: int(len(covered)), names.IMBALANCE: float(covered.max() / covered.min()),
            names.ENTROPY: float(-(p * p.log()).sum() / math.log(num_classes))}
