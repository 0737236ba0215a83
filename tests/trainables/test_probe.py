import torch

from trainables.config import ProbeConfig
from trainables.probe import fit_linear_probe, knn_predict, predict


def test_knn_vote_by_hand():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    queries = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    assert knn_predict(bank, labels, queries, 2, k=2).tolist() == [0, 1]
    # with k=5 every bank row votes; the similarity weighting still picks the near class
    assert knn_predict(bank, labels, queries, 2, k=5, temperature=0.07).tolist() == [0, 1]
    # a very high temperature makes the vote a plain count: three 1s beat two 0s
    assert knn_predict(bank, labels, queries[:1], 2, k=5, temperature=1e6).tolist() == [1]


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 4
    y = torch.arange(4).repeat_interleave(50)
    x = centres[y] + torch.randn(200, 16, generator=g)
    probe = fit_linear_probe(x, y, 4, ProbeConfig(epochs=30), torch.Generator().manual_seed(1))
    assert (predict(probe, x) == y).float().mean() == 1.0


def test_balanced_sampling_reduces_the_head_bias_on_overlapping_classes():
    # Two overlapping classes, 20:1 imbalance: the plain probe sides with the head,
    # class-balanced sampling moves the boundary back towards the middle.
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.zeros(400, dtype=torch.long), torch.ones(20, dtype=torch.long)])
    x = torch.randn(420, 2, generator=g) + torch.stack([y * 1.5, torch.zeros(420)], 1).float()
    test_y = torch.arange(2).repeat_interleave(500)
    test_x = torch.randn(1000, 2, generator=g) + torch.stack([test_y * 1.5, torch.zeros(1000)], 1).float()
    cfg = ProbeConfig(epochs=40)
    plain = predict(fit_linear_probe(x, y, 2, cfg, torch.Generator().manual_seed(1)), test_x)
    balanced = predict(fit_linear_probe(x, y, 2, cfg, torch.Generator().manual_seed(1), True), test_x)
    tail_recall = lambda pred: (pred[test_y == 1] == 1).float().mean()  # noqa: E731
    assert tail_recall(balanced) > tail_recall(plain) + 0.2


def test_probe_is_reproducible_under_a_seed():
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    a = fit_linear_probe(x, y, 3, ProbeConfig(epochs=5), torch.Generator().manual_seed(2))
    b = fit_linear_probe(x, y, 3, ProbeConfig(epochs=5), torch.Generator().manual_seed(2))
    assert torch.equal(a.linear.weight, b.linear.weight)
