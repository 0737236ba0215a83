"""Value tests for trainables/losses.py: the masked contrastive loss (its masks:
test_masks.py).

Contract (docs/architecture.md, "Losses"): loss is the mean over anchors with >= 1
positive of -(1/|P_i|) sum_{p in P_i} log(exp(z_i.z_p/t) / sum_{j != i} exp(z_i.z_j/t)).
SimCLR / SupCon / KCL differ only in the mask; KCL(k=0) == SimCLR and
KCL(k >= largest same-class count) == SupCon.
"""

from __future__ import annotations

import math

import pytest
import torch
from fixtures import two_view_labels, unit_rows

from trainables.losses import (
    contrastive_loss,
    kcl_mask,
    other_view_mask,
    simclr_mask,
    supcon_mask,
)


# ----------------------------------------------------------------------------- helpers

def reference_loss(z, pos_mask, t, keys=None) -> float:
    """Slow loop reference, written straight from the formula, in python floats (float64)."""
    zz = z.detach().double().tolist()
    self_keys = keys is None
    kk = zz if self_keys else keys.detach().double().tolist()
    mask = pos_mask.tolist()

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b))

    per_anchor = []
    for i, zi in enumerate(zz):
        positives = [p for p in range(len(kk)) if mask[i][p]]
        if not positives:
            continue
        denom = sum(math.exp(dot(zi, kk[j]) / t)
                    for j in range(len(kk)) if not (self_keys and j == i))
        total = 0.0
        for p in positives:
            total += math.log(math.exp(dot(zi, kk[p]) / t) / denom)
        per_anchor.append(-total / len(positives))
    if not per_anchor:
        return 0.0
    return sum(per_anchor) / len(per_anchor)


def assert_close64(value: torch.Tensor, expected: float):
    assert torch.allclose(value.detach().double(), torch.tensor(expected, dtype=torch.float64)), \
        (float(value), expected)


# ----------------------------------------------------------------------------- the loss itself

@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_contrastive_loss_matches_loop_reference_self_keys(t):
    gen = torch.Generator().manual_seed(0)
    m, d = 12, 5
    z = unit_rows(m, d, gen)
    mask = torch.rand(m, m, generator=gen) < 0.25
    mask.fill_diagonal_(False)
    mask[3] = False          # some rows with no positives
    mask[7] = False
    assert mask.sum() > 0
    loss = contrastive_loss(z, mask, t)
    assert_close64(loss, reference_loss(z, mask, t))


@pytest.mark.parametrize("t", [0.2, 1.0])
def test_contrastive_loss_matches_loop_reference_with_keys(t):
    gen = torch.Generator().manual_seed(1)
    m, k, d = 6, 10, 5
    z = unit_rows(m, d, gen)
    keys = unit_rows(k, d, gen)
    mask = torch.rand(m, k, generator=gen) < 0.3
    mask[2] = False
    mask[4, 4] = True        # index == anchor index: no self exclusion with separate keys
    loss = contrastive_loss(z, mask, t, keys=keys)
    assert_close64(loss, reference_loss(z, mask, t, keys=keys))


def test_keys_equal_to_anchors_still_keep_the_anchor_in_the_denominator():
    # Passing keys=z explicitly is the "separate key set" case: denominator over all
    # keys, the anchor's own key (exp(1/t)) included; it differs from keys=None.
    gen = torch.Generator().manual_seed(2)
    z = unit_rows(4, 3, gen)
    mask = other_view_mask(2)
    with_keys = contrastive_loss(z, mask, 0.5, keys=z.clone())
    assert_close64(with_keys, reference_loss(z, mask, 0.5, keys=z.clone()))
    assert not torch.allclose(with_keys.double(), contrastive_loss(z, mask, 0.5).double())


def test_hand_computed_tiny_case():
    # z0=(1,0), z1=(0,1), z2=(-1,0); t=0.5, so logits z_i.z_j/t are
    # 0.1 -> 0, 0.2 -> -2, 1.2 -> 0.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    t = 0.5
    mask = torch.tensor([[False, True, True],
                         [True, False, False],
                         [False, False, False]])
    # anchor 0: denom = e^0 + e^-2; positives 1 (logit 0) and 2 (logit -2):
    #   -(1/2)[log(1/(1+e^-2)) + log(e^-2/(1+e^-2))] = log(1+e^-2) + 1
    # anchor 1: denom = e^0 + e^0 = 2; positive 0 (logit 0): log 2
    # anchor 2: no positive, excluded from the mean.
    loss0 = math.log(1 + math.exp(-2)) + 1
    loss1 = math.log(2)
    expected = (loss0 + loss1) / 2
    assert_close64(contrastive_loss(z, mask, t), expected)

    # Only anchor 1 with a positive: the mean runs over that anchor alone.
    mask_one = torch.zeros(3, 3, dtype=torch.bool)
    mask_one[1, 0] = True
    assert_close64(contrastive_loss(z, mask_one, t), math.log(2))


def test_hand_computed_keys_case():
    # One anchor (1,0), keys (1,0), (0,1), (-1,0) at t=1: logits 1, 0, -1.
    z = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, False, False]])
    denom = math.e + 1 + math.exp(-1)
    expected = -math.log(math.e / denom)
    assert_close64(contrastive_loss(z, mask, 1.0, keys=keys), expected)


def test_permutation_invariance_supcon():
    gen = torch.Generator().manual_seed(3)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2])
    labels = two_view_labels(y)
    m = len(labels)
    z = unit_rows(m, 6, gen)
    mask = supcon_mask(labels)
    base = contrastive_loss(z, mask, 0.3)
    for seed in range(3):
        perm = torch.randperm(m, generator=torch.Generator().manual_seed(10 + seed))
        permuted = contrastive_loss(z[perm], mask[perm][:, perm], 0.3)
        assert torch.allclose(permuted.double(), base.double(), rtol=1e-6, atol=1e-8)
        # Same thing built from the permuted labels.
        assert torch.equal(supcon_mask(labels[perm]), mask[perm][:, perm])


def test_no_positive_anywhere_gives_zero_and_backward_works():
    z = unit_rows(6, 4, torch.Generator().manual_seed(4)).requires_grad_(True)
    mask = torch.zeros(6, 6, dtype=torch.bool)
    loss = contrastive_loss(z, mask, 0.1)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert z.grad is not None
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_no_nan_with_singleton_class_supcon():
    # Label 9 appears in a single row: that anchor has no positive (SupCon without views).
    labels = torch.tensor([0, 0, 1, 1, 9, 0])
    mask = supcon_mask(labels)
    assert mask[4].sum() == 0
    z = unit_rows(6, 4, torch.Generator().manual_seed(5)).requires_grad_(True)
    loss = contrastive_loss(z, mask, 0.1)
    assert torch.isfinite(loss)
    assert_close64(loss, reference_loss(z, mask, 0.1))
    loss.backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("mask_fn", [supcon_mask, kcl_mask, simclr_mask])
def test_no_nan_with_singleton_class_in_a_two_view_batch(mask_fn):
    # Class 5 has a single image: its two rows have only each other.
    labels = two_view_labels([0, 0, 0, 5, 1, 1])
    mask = mask_fn(labels, k=2, generator=torch.Generator().manual_seed(0))
    n = 6
    assert mask[3].nonzero().flatten().tolist() == [3 + n]
    assert mask[3 + n].nonzero().flatten().tolist() == [3]
    z = unit_rows(12, 4, torch.Generator().manual_seed(6)).requires_grad_(True)
    loss = contrastive_loss(z, mask, 0.07)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_float64_input_keeps_float64_precision():
    # A float64 caller (e.g. gradcheck, the loop reference) should get float64 math.
    gen = torch.Generator().manual_seed(7)
    z = unit_rows(8, 4, gen)
    mask = supcon_mask(two_view_labels([0, 1, 0, 1]))
    loss = contrastive_loss(z, mask, 0.1)
    assert loss.dtype == torch.float64
    assert abs(float(loss) - reference_loss(z, mask, 0.1)) < 1e-12


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(8)
    z = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = supcon_mask(two_view_labels([0, 1, 0]))
    assert torch.autograd.gradcheck(lambda x: contrastive_loss(x, mask, 0.5), (z,))
    keys = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    kmask = torch.rand(6, 5, generator=gen) < 0.4
    kmask[0, 0] = True
    assert torch.autograd.gradcheck(lambda x, k: contrastive_loss(x, kmask, 0.5, keys=k), (z, keys))
