"""The clustering benchmark's scores, by hand."""

import pytest
import torch

from study.bench_clusters import measure, pair_scores


def test_pair_scores_by_hand():
    # images 0-3: class 0, 0, 1, 1; clusters {0, 1, 2} and {3}; image 2 is the tail anchor
    labels = torch.tensor([0, 0, 1, 1])
    pseudo = torch.tensor([0, 0, 0, 1])
    tail = torch.tensor([False, False, True, True])
    scores = pair_scores(pseudo, labels, tail)
    # ordered same-cluster pairs: (0,1) (1,0) hit; (0,2) (2,0) (1,2) (2,1) miss -> 2 / 6
    assert scores["pair precision"] == pytest.approx(2 / 6)
    # tail anchors 2 and 3: image 2 has 2 pairs, no hit; image 3 none -> 0 / 2; reach 0 of 2
    assert scores["tail precision"] == 0 and scores["tail reach"] == 0


def test_clusters_of_separated_classes_beat_the_random_floor():
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([60, 30, 10])])
    centres = torch.nn.functional.normalize(torch.randn(3, 16, generator=g), dim=1)
    features = centres[labels] + 0.05 * torch.randn(len(labels), 16, generator=g)
    rows = {(r["method"], r["M"]): r for r in measure(features, labels, [3])}
    assert rows[("kmeans", 3)]["pair precision"] == 1 and rows[("kmeans", 3)]["tail reach"] == 1
    assert rows[("random", 3)]["pair precision"] < 0.6
    assert rows[("sinkhorn", 3)]["largest"] - rows[("sinkhorn", 3)]["smallest"] <= 10
