import torch

from trainables.augment import augment, colour_matrix, crop_flip_theta, small_affine_theta


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_crop_parameters_differ_per_sample_and_stay_inside_the_image():
    theta = crop_flip_theta(256, _gen(), "cpu")
    w, h, cx, cy = theta[:, 0, 0].abs(), theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2]
    assert len(torch.unique(theta.flatten(1), dim=0)) == 256   # no two samples share a crop
    assert ((w > 0) & (w <= 1) & (h > 0) & (h <= 1)).all()
    # the crop [c - size, c + size] lies inside [-1, 1]
    assert ((cx.abs() + w) <= 1 + 1e-6).all() and ((cy.abs() + h) <= 1 + 1e-6).all()
    # area fraction w*h within the requested scale range (0.35, 1), up to the clip at 1
    assert ((w * h) >= 0.35 * 0.74).all()
    flipped = (theta[:, 0, 0] < 0).float().mean()
    assert 0.35 < flipped < 0.65


def test_digit_affine_never_flips():
    theta = small_affine_theta(512, _gen(), "cpu")
    assert (torch.linalg.det(theta[:, :, :2]) > 0).all()


def test_one_batch_of_identical_images_gets_different_views():
    x = torch.rand(1, 3, 32, 32).expand(16, -1, -1, -1).contiguous()
    out = augment(x, "rgb", _gen())
    diffs = (out[:, None] - out[None]).abs().flatten(2).amax(-1)
    off_diag = diffs[~torch.eye(16, dtype=torch.bool)]
    assert (off_diag > 1e-3).all()
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_gray_views_differ_and_keep_range():
    x = torch.rand(1, 1, 8, 8).expand(8, -1, -1, -1).contiguous()
    out = augment(x, "gray", _gen())
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8
    assert out.min() >= 0 and out.max() <= 1


def test_same_generator_seed_gives_the_same_views():
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(augment(x, "rgb", _gen(5)), augment(x, "rgb", _gen(5)))
    assert not torch.equal(augment(x, "rgb", _gen(5)), augment(x, "rgb", _gen(6)))


def test_colour_matrix_keeps_gray_pixels_gray_at_zero_hue_and_full_saturation():
    m = colour_matrix(4, _gen(), "cpu", saturation=0.0, hue=0.0)
    assert torch.allclose(m, torch.eye(3).expand(4, 3, 3), atol=1e-5)
    # any saturation and hue maps a gray pixel (r = g = b) to itself
    m = colour_matrix(64, _gen(), "cpu")
    gray = torch.full((3,), 0.5)
    assert torch.allclose(m @ gray, gray.expand(64, 3), atol=1e-4)
