"""The augmented probe (probe.protocol=augmented) against hand-written SGD, its step decay,
the frozen encoder, its fresh views, and the literature presets."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import ProbeConfig, TrialConfig
from trainables.presets import PROBE_PRESETS, resolve
from trainables.probe_augmented import fit_augmented_probe, lr_at

C, D = 3, 4


def encoder() -> nn.Module:
    """A small frozen feature map with BatchNorm (whose statistics must not move)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 2 * 2, D), nn.BatchNorm1d(D), nn.ReLU())


def data(n: int = 6):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 2, 2, 2), generator=g, dtype=torch.uint8)
    return images, torch.tensor([0, 1, 2, 0, 1, 2][:n]), torch.full((2, 1, 1), 0.5), torch.full((2, 1, 1), 0.25)


def test_step_decay_multiplies_the_rate_at_each_milestone_reached():
    balfeat = TrialConfig.from_flat(resolve({"probe.preset": "balfeat"}, {})).probe
    assert [lr_at(balfeat, e) for e in (0, 59, 60, 79, 80, 99)] == pytest.approx([30, 30, 3, 3, 0.3, 0.3])
    supcon = TrialConfig.from_flat(resolve({"probe.preset": "supcon"}, {})).probe
    assert [lr_at(supcon, e) for e in (0, 59, 60, 74, 75, 89, 90)] == pytest.approx(
        [0.1, 0.1, 0.02, 0.02, 0.004, 0.004, 0.0008])


def test_two_full_batch_epochs_equal_hand_written_sgd_with_momentum_and_decay():
    cfg = ProbeConfig(protocol="augmented", epochs=2, batch_size=64, lr=0.5, weight_decay=0.01, momentum=0.9,
                      milestones="1", decay=0.5)
    f, (images, labels, mean, std) = encoder(), data()
    f.eval()
    state = {k: v.clone() for k, v in f.state_dict().items()}
    seed = 7
    probe = fit_augmented_probe(f, images, labels, C, cfg, mean, std, torch.Generator().manual_seed(seed),
                                views=lambda x, g: x)           # identity views: the formula below holds
    # by hand: z = f((x - mean) / std), W0 ~ N(0, 0.01^2) from the same generator, b0 = 0
    with torch.no_grad():
        z = f((images.float() / 255 - mean) / std)
    w = torch.empty(C, D).normal_(0, 0.01, generator=torch.Generator().manual_seed(seed))
    b = torch.zeros(C)
    y = F.one_hot(labels, C).float()
    buf_w = buf_b = None
    for epoch, lr in enumerate((0.5, 0.25)):                    # milestone 1, decay 0.5
        p = torch.softmax(z @ w.T + b, dim=1)
        g_w = (p - y).T @ z / len(z) + 0.01 * w                 # cross-entropy's mean gradient + weight decay
        g_b = (p - y).mean(0) + 0.01 * b
        buf_w = g_w if buf_w is None else 0.9 * buf_w + g_w     # SGD momentum, no dampening
        buf_b = g_b if buf_b is None else 0.9 * buf_b + g_b
        w, b = w - lr * buf_w, b - lr * buf_b
    assert torch.allclose(probe.weight, w, atol=1e-6) and torch.allclose(probe.bias, b, atol=1e-6)
    # the encoder is frozen: weights and BatchNorm statistics as they were, mode restored
    assert all(torch.equal(v, state[k]) for k, v in f.state_dict().items()) and not f.training


def test_each_epoch_draws_new_crop_flip_views_of_the_same_images():
    cfg = ProbeConfig(protocol="augmented", epochs=2, batch_size=64, crop_scale=0.2)
    f, (images, labels, mean, std) = encoder(), data()
    from trainables.augment import crop_flip
    seen = []

    def views(x, g):
        seen.append(x.clone())
        out = crop_flip(x, g, scale=(cfg.crop_scale, 1.0))
        seen.append(out)
        return out
    fit_augmented_probe(f, images, labels, C, cfg, mean, std, torch.Generator().manual_seed(0), views=views)
    (x0, v0), (x1, v1) = (seen[0], seen[1]), (seen[2], seen[3])
    assert not torch.equal(v0, x0) and not torch.equal(v0[torch.argsort(x0.flatten(1).sum(1))],
                                                       v1[torch.argsort(x1.flatten(1).sum(1))])


def test_presets_resolve_into_explicit_keys_and_a_set_key_wins():
    flat = resolve({"probe.preset": "balfeat", "probe.epochs": 5}, {})
    cfg = TrialConfig.from_flat(flat).probe
    assert (cfg.protocol, cfg.lr, cfg.batch_size, cfg.epochs, cfg.milestones, cfg.decay, cfg.weight_decay,
            cfg.crop_scale) == ("augmented", 30.0, 256, 5, "60,80", 0.1, 0.0, 0.08)
    assert set(PROBE_PRESETS) == {"balfeat", "supcon"}
    with pytest.raises(ValueError, match="probe.preset"):
        TrialConfig.from_flat(resolve({"probe.preset": "moco"}, {}))
    with pytest.raises(ValueError, match="probe.milestones"):
        TrialConfig.from_flat({"probe.milestones": "60,x"})
    assert TrialConfig().probe.protocol == "cached"            # the cached probe stays the default


def test_gray_digits_are_cropped_but_never_flipped():
    from trainables.augment import crop_flip
    x = torch.zeros(64, 1, 8, 8)
    x[..., :4] = 1.0                                           # bright left half
    def left_brighter(v):
        return (v[..., :4].mean((1, 2, 3)) >= v[..., 4:].mean((1, 2, 3)))
    assert left_brighter(crop_flip(x, torch.Generator().manual_seed(0), scale=(0.5, 1.0), flip=False)).all()
    assert not left_brighter(crop_flip(x, torch.Generator().manual_seed(0), scale=(0.5, 1.0))).all()
