"""Pseudo-label KCL: the device clustering, and the loss's exact relations to SimCLR and KCL."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from trainables.clustering import cluster, kmeans_pp, lloyd, sinkhorn_assign
from trainables.config import TrialConfig
from trainables.objectives import build_objective
from trainables.presets import SMOKE
from trainables.pretrain import TrainSet, pretrain
from trainables.trial import build_train_set, build_trial_objective, plan_data

PKCL = {**SMOKE, "loss.name": "pkcl", "optim.epochs": 4, "loss.warmup_epochs": 1, "loss.recluster_every": 2,
        "loss.clusters": 12}


def blobs(sizes, dim=16, spread=0.05, seed=0):
    """Points around len(sizes) random unit centres ([sum(sizes), dim]) and their blob ids."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(len(sizes), dim, generator=g), dim=1)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


def test_kmeans_recovers_separated_blobs_of_unequal_sizes():
    x, y = blobs([200, 40, 8, 3])
    assign = cluster(x, 4, "kmeans", torch.Generator().manual_seed(0))
    # one cluster per blob: the (blob, cluster) pairs are a bijection
    pairs = set(zip(y.tolist(), assign.tolist()))
    assert len(pairs) == 4 and len({c for _, c in pairs}) == 4


def test_more_clusters_than_blobs_split_blobs_and_never_merge_them():
    x, y = blobs([100, 50, 20])
    assign = cluster(x, 10, "kmeans", torch.Generator().manual_seed(1))
    for c in assign.unique():
        assert len(y[assign == c].unique()) == 1      # every cluster pure


def test_sinkhorn_assignment_is_balanced_where_kmeans_follows_the_blobs():
    x, y = blobs([300, 60, 20, 20], spread=0.1)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    km = torch.bincount(cluster(x, 4, "kmeans", g()), minlength=4)
    sk = torch.bincount(cluster(x, 4, "sinkhorn", g()), minlength=4)
    assert sorted(km.tolist()) == sorted(torch.bincount(y).tolist())   # k-means: the blobs
    assert sk.max() - sk.min() <= 0.2 * len(x) / 4    # within 20% of N / M each


def test_sinkhorn_of_a_uniform_plan_hand_case():
    # two points, two clusters, each point closer to its own: the plan is diagonal
    scores = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    # plain argmax puts both in cluster 0; balanced marginals force one per cluster,
    # and point 1 (the weaker preference for 0) goes to 1
    assert scores.argmax(1).tolist() == [0, 0]
    assert sinkhorn_assign(scores, eps=0.1).tolist() == [0, 1]


def test_lloyd_step_by_hand():
    x = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.2, 1.0]]), dim=1)
    c0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c1 = lloyd(x, c0, 1)
    expected = F.normalize(torch.stack([x[0] + x[1], x[2] + x[3]]), dim=1)
    torch.testing.assert_close(c1, expected)
    # an emptied cluster keeps its centroid
    c = lloyd(x, torch.tensor([[1.0, 1.0], [-1.0, -1.0]]) / math.sqrt(2), 1)
    torch.testing.assert_close(c[1], torch.tensor([-1.0, -1.0]) / math.sqrt(2))


def test_clustering_is_reproducible_under_a_seed_and_seeds_differ():
    x, _ = blobs([50] * 6, spread=0.6)
    a = cluster(x, 6, "kmeans", torch.Generator().manual_seed(3))
    b = cluster(x, 6, "kmeans", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    seeds = [kmeans_pp(F.normalize(x, dim=1), 6, torch.Generator().manual_seed(s)) for s in range(4)]
    assert any(not torch.equal(seeds[0], s) for s in seeds[1:])


def _setup(flat: dict, labels_perm: torch.Tensor | None = None):
    cfg = TrialConfig.from_flat(flat)
    torch.manual_seed(cfg.seed)
    plan = plan_data(cfg)
    data = build_train_set(plan, torch.device("cpu"))
    if labels_perm is not None:
        data = TrainSet(**{**data.__dict__, "labels": data.labels[labels_perm]})
    gen = torch.Generator().manual_seed(cfg.seed)
    objective = build_trial_objective(cfg, plan.splits.pool_x.shape[1:], plan.splits.num_classes,
                                      torch.device("cpu"), gen)
    return cfg, data, gen, objective


def _train(flat: dict, labels_perm=None, resume=None):
    cfg, data, gen, objective = _setup(flat, labels_perm)
    states = {}
    # a deep copy, as a checkpoint's file would be: state_dict() holds the live tensors
    report = lambda m, state: states.__setitem__(m["epoch"], copy.deepcopy(state()))  # noqa: E731
    out = pretrain(objective, data, cfg, gen, report, resume=resume)
    return objective, out, states


def _params(objective) -> dict:
    return {k: v for k, v in objective.state_dict().items() if k != "pseudo"}


def _assert_same_training(a, b):
    sa, sb = _params(a[0]), _params(b[0])
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert [h["loss"] for h in a[1].history] == [h["loss"] for h in b[1].history]


def test_pkcl_with_k0_trains_exactly_as_simclr():
    _assert_same_training(_train({**PKCL, "loss.k": 0}), _train({**PKCL, "loss.name": "simclr"}))


def test_pkcl_warmup_is_simclr_whatever_k():
    warm = {**PKCL, "optim.epochs": 2, "loss.warmup_epochs": 1, "optim.schedule": "constant"}
    one = _train({**warm, "loss.k": 4})[2][1]
    simclr = _train({**warm, "loss.name": "simclr"})[2][1]
    for key, value in simclr["objective"].items():
        assert torch.equal(value, one["objective"][key]), key


def test_pkcl_with_the_true_labels_as_clusters_is_kcl_exactly():
    flat = {**PKCL, "loss.k": 3}
    cfg, data, _, pkcl = _setup(flat)
    kcl = build_objective(pkcl.encoder, 10, TrialConfig.from_flat({**flat, "loss.name": "kcl"}),
                          torch.Generator().manual_seed(7))
    kcl.head.load_state_dict(pkcl.head.state_dict())
    pkcl.generator = torch.Generator().manual_seed(7)
    pkcl.prepare(data)
    pkcl.pseudo.copy_(data.labels)                  # "clusters" = the classes
    pkcl.clustered = True
    ids = data.indices[:64]
    x = data.images[ids].float() / 255
    views = [x, x.flip(3)]
    loss_p, pos_p = pkcl(views, torch.zeros_like(ids), ids)      # y ignored: zeros
    loss_k, pos_k = kcl(views, data.labels[ids], ids)
    assert torch.equal(loss_p, loss_k) and torch.equal(pos_p, pos_k)
    assert pos_p > 1                                 # same-class positives were drawn


def test_pretraining_never_reads_a_label():
    cfg, data, _, _ = _setup(PKCL)
    perm = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(5))
    assert not torch.equal(data.labels, data.labels[perm])
    a, b = _train(PKCL), _train(PKCL, labels_perm=perm)
    _assert_same_training(a, b)
    assert torch.equal(a[0].pseudo, b[0].pseudo)
    assert (a[0].pseudo[data.indices] >= 0).all()    # it did cluster
    assert a[1].history[-1]["mean_positives"] > 1    # and drew pseudo-class positives


def test_a_resumed_pkcl_keeps_its_clusters_and_matches_the_uninterrupted_run():
    # re-clustered at epochs 1 and 3 (0-based); resumed after epoch 2, between them
    full = _train(PKCL)
    state = full[2][2]
    resumed = _train(PKCL, resume=state)
    _assert_same_training(full, resumed)
    assert resumed[1].resumed_from_epoch == 2


@pytest.mark.parametrize("key, value, words", [
    ("loss.warmup_epochs", 4, "never clusters"),
    ("loss.clusters", 1, "loss.clusters"),
    ("loss.cluster_method", "spectral", "kmeans"),
    ("loss.recluster_every", 0, "loss.recluster_every"),
])
def test_bad_pkcl_knobs_are_refused_by_name(key, value, words):
    with pytest.raises(ValueError, match=words):
        TrialConfig.from_flat({**PKCL, key: value})
