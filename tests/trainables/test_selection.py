"""Selection strategies: the contract (B distinct indices, seeded, features only),
balance on imbalanced clusters, and the measures on hand-computed cases."""

import inspect
import math

import pytest
import torch

from trainables.selection import STRATEGIES, kmeans, measures, select

COUNTS = [400, 200, 100, 50, 25, 12, 8, 6, 5, 4]      # a long tail of 10 well-separated classes


def _clusters(seed: int = 0):
    """Imbalanced Gaussian blobs around 10 orthogonal directions in 16-d: [N, 16], [N]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    centres = torch.eye(16)[:10] * 3
    return centres[labels] + 0.3 * torch.randn(len(labels), 16, generator=g), labels


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_returns_budget_distinct_indices_deterministically(name):
    x, _ = _clusters()
    for budget in (1, 10, 37):
        a = select(name, x, budget, seed=3)
        assert a.dtype == torch.long and len(a) == budget and len(set(a.tolist())) == budget
        assert 0 <= int(a.min()) and int(a.max()) < len(x)
        assert torch.equal(a, select(name, x, budget, seed=3))
    if name == "random":                                   # the seed is really used
        assert not torch.equal(select(name, x, 10, seed=3), select(name, x, 10, seed=4))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_no_strategy_can_read_labels(name):
    # Only (features, budget, seed) and the strategy's own numeric knobs.
    params = list(inspect.signature(STRATEGIES[name].select).parameters)
    assert params[:3] == ["features", "budget", "seed"]
    assert set(params[3:]) <= {*STRATEGIES[name].knobs, "knn"}


def test_balance_seeking_strategies_cover_more_classes_than_random():
    x, labels = _clusters()
    covered = {name: [measures(labels[select(name, x, 10, seed=s)], 10)["classes_covered"]
                      for s in range(5)] for name in STRATEGIES}
    mean = {name: sum(v) / len(v) for name, v in covered.items()}
    for name in ("kmeans", "typiclust", "probcover", "spread"):
        assert mean[name] > mean["random"] + 1, mean
    assert mean["spread"] >= 9, mean                    # one pick per separated class, nearly


def test_kmeans_recovers_separated_balanced_clusters_and_keeps_every_cluster():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(30)
    x = torch.eye(4)[labels] * 5 + 0.1 * torch.randn(90, 4, generator=g)
    centroids, assign = kmeans(x, 3, seed=0)
    assert sorted(len(torch.unique(labels[assign == c])) for c in range(3)) == [1, 1, 1]
    assert torch.equal(assign, torch.cdist(x, centroids).argmin(1))     # Lloyd's fixed point
    _, assign = kmeans(x[:5], 5, seed=0)                                # k = N: no empty cluster
    assert sorted(assign.tolist()) == [0, 1, 2, 3, 4]


def test_measures_by_hand():
    # counts over 4 classes: [3, 1, 0, 0]; covered 2; imbalance 3; p = (3/4, 1/4)
    m = measures(torch.tensor([0, 0, 0, 1]), 4)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(4)
    assert m == {"classes_covered": 2, "imbalance": 3.0, "entropy": pytest.approx(h)}
    # uniform over all classes: entropy 1, imbalance 1
    assert measures(torch.arange(5).repeat(2), 5) == {"classes_covered": 5, "imbalance": 1.0,
                                                      "entropy": pytest.approx(1.0)}


def test_a_budget_outside_the_pool_is_refused():
    x, _ = _clusters()
    with pytest.raises(ValueError, match="budget"):
        select("random", x, len(x) + 1, seed=0)
