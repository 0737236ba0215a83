"""Value tests for the masks of trainables/losses.py: SimCLR, SupCon and KCL differ
only in which rows are positives; KCL(k=0) == SimCLR and KCL(k >= 2n - 2) == SupCon
for a class of n images in a two-view batch."""

from __future__ import annotations

import pytest
import torch
from fixtures import two_view_labels, unit_rows

from trainables.losses import (
    contrastive_loss,
    kcl_mask,
    other_view_mask,
    same_label_mask,
    sample_k_per_row,
    simclr_mask,
    supcon_mask,
)


def test_simclr_mask_other_view_is_the_only_positive():
    n = 5
    labels = two_view_labels([0, 0, 1, 1, 2])
    mask = simclr_mask(labels)
    assert mask.shape == (2 * n, 2 * n)
    for i in range(2 * n):
        assert mask[i].nonzero().flatten().tolist() == [(i + n) % (2 * n)]
    assert not mask.diagonal().any()
    assert torch.equal(mask, mask.T)
    assert torch.equal(other_view_mask(n), mask)


def test_same_label_mask_values():
    labels = torch.tensor([0, 1, 0, 2])
    expected = torch.tensor([[0, 0, 1, 0],
                             [0, 0, 0, 0],
                             [1, 0, 0, 0],
                             [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(same_label_mask(labels), expected)
    # With separate key labels the diagonal is not cleared.
    keys = torch.tensor([0, 2, 0])
    expected_k = torch.tensor([[1, 0, 1],
                               [0, 0, 0],
                               [1, 0, 1],
                               [0, 1, 0]], dtype=torch.bool)
    assert torch.equal(same_label_mask(labels, keys), expected_k)


def test_kcl_k0_equals_simclr():
    labels = two_view_labels([0, 1, 0, 2, 1, 0, 0])
    z = unit_rows(len(labels), 4, torch.Generator().manual_seed(9))
    kcl = kcl_mask(labels, 0, generator=torch.Generator().manual_seed(0))
    sim = simclr_mask(labels)
    assert torch.equal(kcl, sim)
    assert torch.equal(contrastive_loss(z, kcl, 0.2), contrastive_loss(z, sim, 0.2))


@pytest.mark.parametrize("k", [6, 7, 100])
def test_kcl_large_k_equals_supcon(k):
    # Largest class has 4 images -> 8 rows -> 6 same-label rows besides self and view;
    # k = 6 is exactly enough.
    labels = two_view_labels([0, 1, 0, 2, 1, 0, 0, 3])
    z = unit_rows(len(labels), 4, torch.Generator().manual_seed(10))
    kcl = kcl_mask(labels, k, generator=torch.Generator().manual_seed(1))
    sup = supcon_mask(labels)
    assert torch.equal(kcl, sup)
    assert torch.equal(contrastive_loss(z, kcl, 0.2), contrastive_loss(z, sup, 0.2))
    # And the losses differ from SimCLR (repeated classes give extra positives).
    assert not torch.allclose(contrastive_loss(z, sup, 0.2), contrastive_loss(z, simclr_mask(labels), 0.2))


def test_kcl_intermediate_k_structure():
    y = [0, 1, 0, 2, 1, 0, 0, 3, 0, 1]   # class 0: 5 images, class 1: 3, classes 2, 3: 1
    labels = two_view_labels(y)
    n, m = len(y), len(labels)
    k = 3
    mask = kcl_mask(labels, k, generator=torch.Generator().manual_seed(0))
    assert not mask.diagonal().any()
    for i in range(m):
        partner = (i + n) % m
        available = int((labels == labels[i]).sum()) - 2
        row = mask[i]
        assert row[partner], f"row {i} misses its other view"
        assert int(row.sum()) == 1 + min(k, available)
        assert (labels[row] == labels[i]).all()
    # Identical generator seed -> identical mask.
    again = kcl_mask(labels, k, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    # Rows of class 0 have 8 candidates and draw 3: they do not all draw the same
    # relative positions, and different seeds give different masks.
    other = kcl_mask(labels, k, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(mask, other)


def test_kcl_draws_cover_all_candidates_roughly_uniformly():
    y = [0, 0, 0, 0, 0]          # 10 rows, 8 candidates each besides self and view
    labels = two_view_labels(y)
    k, draws = 2, 400
    counts = torch.zeros(10, 10)
    for s in range(draws):
        counts += kcl_mask(labels, k, generator=torch.Generator().manual_seed(s)).float()
    view = other_view_mask(5)
    cand = same_label_mask(labels) & ~view
    assert torch.equal(counts[view], torch.full((10,), float(draws)))
    freq = counts[cand] / draws          # expected k / 8 = 0.25
    assert freq.min() > 0.15 and freq.max() < 0.35
    assert counts.diagonal().sum() == 0


def test_sample_k_per_row_subset_and_counts():
    gen = torch.Generator().manual_seed(11)
    cand = torch.rand(20, 15, generator=gen) < 0.4
    cand[0] = False
    cand[1] = True
    for k in [0, 1, 3, 7, 15]:
        out = sample_k_per_row(cand, k, generator=torch.Generator().manual_seed(k))
        assert out.dtype == torch.bool
        assert not (out & ~cand).any(), "selected a non-candidate"
        expected = torch.clamp(cand.sum(1), max=k)
        assert torch.equal(out.sum(1), expected)


def test_sample_k_larger_than_columns():
    cand = torch.tensor([[True, False, True, True],
                         [False, False, False, False],
                         [True, True, True, True]])
    out = sample_k_per_row(cand, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, cand)


def test_sample_k_per_row_seeded_and_random():
    cand = torch.ones(8, 12, dtype=torch.bool)
    a = sample_k_per_row(cand, 4, generator=torch.Generator().manual_seed(3))
    b = sample_k_per_row(cand, 4, generator=torch.Generator().manual_seed(3))
    c = sample_k_per_row(cand, 4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Rows draw independently: not every row picks the same columns.
    assert len({tuple(r.tolist()) for r in a}) > 1


def test_kcl_one_below_the_bound_is_not_supcon():
    # The other side of the bound the sweep refuses from (study.config_checks.kcl_limit): with
    # k = 2n - 3 = 5 every row of the 4-image class misses exactly one same-label row.
    labels = two_view_labels([0, 1, 0, 2, 1, 0, 0, 3])
    kcl = kcl_mask(labels, 5, generator=torch.Generator().manual_seed(1))
    sup = supcon_mask(labels)
    head = labels == 0
    assert torch.equal(sup[head].sum(1), torch.full((8,), 7)) and torch.equal(kcl[head].sum(1), torch.full((8,), 6))
    assert torch.equal(kcl[~head], sup[~head])             # the smaller classes are whole either way
