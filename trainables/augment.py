"""Batched augmentation with per-sample random parameters, on the data's device.

torchvision's transforms draw one set of parameters per call, so on a batch
every image would get the same crop; here every parameter is a [B] tensor and
each step is one batched op (affine_grid + grid_sample for geometry, 3x3
colour matrices for the jitter).

    rgb  (SimCLR family): random resized crop, horizontal flip, colour jitter
                          (brightness, contrast, saturation, hue) with p=0.8,
                          grayscale with p=0.2
    gray (digits):        small affine (rotation, scale, shift) and pixel noise;
                          no flips, which would change a digit's identity
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


def _uniform(shape, lo, hi, g, device):
    return lo + (hi - lo) * torch.rand(shape, generator=g, device=device)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample x [B, C, H, W] through per-sample affine maps theta [B, 2, 3] (output -> input).

    Outside the image is 0: the digits' background (crops never leave the image).
    """
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def crop_flip_theta(b: int, g, device, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """[B, 2, 3] affine maps of a random resized crop with a random horizontal flip.

    A crop of area fraction s and aspect r covers (w, h) = (sqrt(s r), sqrt(s / r))
    of the image (clipped to 1); its centre is uniform where the crop fits.
    """
    area = _uniform(b, *scale, g, device)
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), g, device)
    w = (area * log_r.exp()).sqrt().clamp(max=1.0)
    h = (area / log_r.exp()).sqrt().clamp(max=1.0)
    cx = (1 - w) * _uniform(b, -1.0, 1.0, g, device)
    cy = (1 - h) * _uniform(b, -1.0, 1.0, g, device)
    flip = torch.where(torch.rand(b, generator=g, device=device) < 0.5, -1.0, 1.0)
    zero = torch.zeros(b, device=device)
    return torch.stack([torch.stack([w * flip, zero, cx], -1), torch.stack([zero, h, cy], -1)], 1)


def crop_flip(x: torch.Tensor, g, scale=(0.08, 1.0), flip: bool = True) -> torch.Tensor:
    """[B, C, H, W] float -> a random resized crop (area fraction in `scale`, aspect in
    [3/4, 4/3]) of each image, horizontally flipped with probability 1/2 (never with
    flip=False: gray digits), at full size."""
    theta = crop_flip_theta(len(x), g, x.device, scale)
    if not flip:
        theta[:, 0, 0] = theta[:, 0, 0].abs()
    return _warp(x, theta)


def small_affine_theta(b: int, g, device, degrees=15.0, scale=(0.85, 1.15), shift=0.15) -> torch.Tensor:
    """[B, 2, 3] rotation by +-degrees, isotropic scale, shift (fraction of the half-width)."""
    angle = _uniform(b, -degrees, degrees, g, device) * math.pi / 180
    s = 1 / _uniform(b, *scale, g, device)           # output->input map: inverse scale
    tx, ty = _uniform(b, -shift, shift, g, device), _uniform(b, -shift, shift, g, device)
    cos, sin = angle.cos() * s, angle.sin() * s
    return torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], 1)


def colour_matrix(b: int, g, device, saturation=0.4, hue=0.1) -> torch.Tensor:
    """[B, 3, 3] per-sample saturation and hue change as one linear map of RGB.

    Saturation s blends with the luma image: s I + (1 - s) 1 w^T. Hue rotates the
    chroma plane of YIQ by 2 pi h.
    """
    w = torch.tensor(_LUMA, device=device)
    s = _uniform((b, 1, 1), 1 - saturation, 1 + saturation, g, device)
    sat = s * torch.eye(3, device=device) + (1 - s) * torch.ones(3, 1, device=device) * w
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                       device=device)
    angle = _uniform(b, -hue, hue, g, device) * 2 * math.pi
    rot = torch.zeros(b, 3, 3, device=device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = angle.cos(), -angle.sin()
    rot[:, 2, 1], rot[:, 2, 2] = angle.sin(), angle.cos()
    return torch.linalg.inv(yiq) @ rot @ yiq @ sat


def colour_jitter(x: torch.Tensor, g, p=0.8, brightness=0.4, contrast=0.4) -> torch.Tensor:
    """Per-sample brightness, contrast, saturation and hue on x [B, 3, H, W] in [0, 1],
    each image with probability p. Unlike torchvision the order is fixed (it
    shuffles it per call) and the clamp to [0, 1] comes before each blend."""
    b, dev = len(x), x.device
    out = (x * _uniform((b, 1, 1, 1), 1 - brightness, 1 + brightness, g, dev)).clamp(0, 1)
    luma = torch.einsum("c,bchw->bhw", torch.tensor(_LUMA, device=dev), out)
    mean = luma.mean(dim=(1, 2))[:, None, None, None]
    out = mean + _uniform((b, 1, 1, 1), 1 - contrast, 1 + contrast, g, dev) * (out - mean)
    out = torch.einsum("bij,bjhw->bihw", colour_matrix(b, g, dev), out.clamp(0, 1))
    apply = (torch.rand(b, generator=g, device=dev) < p)[:, None, None, None]
    return torch.where(apply, out.clamp(0, 1), x)


def random_grayscale(x: torch.Tensor, g, p=0.2) -> torch.Tensor:
    luma = torch.einsum("c,bchw->bhw", torch.tensor(_LUMA, device=x.device), x)[:, None]
    apply = (torch.rand(len(x), generator=g, device=x.device) < p)[:, None, None, None]
    return torch.where(apply, luma.expand_as(x), x)


def augment(x: torch.Tensor, kind: str, g: torch.Generator | None = None) -> torch.Tensor:
    """One augmented view of a batch.

    Args:
        x: [B, C, H, W] float in [0, 1], on the training device.
        kind: "rgb" or "gray".
        g: generator on x's device (None: the global one).
    Returns:
        [B, C, H, W] float in [0, 1].
    """
    b, dev = len(x), x.device
    if kind == "rgb":
        x = _warp(x, crop_flip_theta(b, g, dev))
        return random_grayscale(colour_jitter(x, g), g)
    if kind == "gray":
        x = _warp(x, small_affine_theta(b, g, dev))
        return (x + 0.05 * torch.randn(x.shape, generator=g, device=dev)).clamp(0, 1)
    raise ValueError(f"unknown augmentation kind {kind!r}; choose 'rgb' or 'gray'")
