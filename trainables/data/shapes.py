"""`shapes`: a procedural 32x32 RGB dataset of ten shape families, made offline.

Each class is a shape family drawn from a signed distance function (SDF) in the
shape's own frame; every image draws its own scale, rotation, position, colours,
background texture, distractor strokes and pixel noise, so an encoder must learn
invariances to separate the classes. The shape is always brighter than its
background: with the contrast flipping at random nothing was learned at CPU
budgets (issue 2's prototype). Deterministic under its seed; rendered in
batches with tensor ops, so ten thousand images take about a second.
"""

from __future__ import annotations

import math

import torch

SIZE = 32
CLASS_NAMES = ("disk", "square", "triangle", "star", "cross",
               "ring", "heart", "crescent", "arrow", "pentagon")


# --- SDFs in the shape frame: p is [..., 2], the shape spans about [-1, 1]^2 --------

def _box(p, hx, hy):
    q = p.abs() - torch.tensor([hx, hy], dtype=p.dtype)
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


def _polygon(p, n, radius=1.0, phase=0.0):
    """Regular n-gon with circumradius `radius`: max over edges of n_e.p - apothem."""
    angles = phase + (2 * math.pi / n) * (torch.arange(n, dtype=p.dtype) + 0.5)
    normals = torch.stack([angles.cos(), angles.sin()], dim=-1)        # [n, 2]
    return (p @ normals.T).max(dim=-1).values - radius * math.cos(math.pi / n)


def _disk(p, centre=(0.0, 0.0), r=1.0):
    return (p - torch.tensor(centre, dtype=p.dtype)).norm(dim=-1) - r


def _star(p):
    # Polar radius alternating between 1 (tips) and 0.45 (notches), five tips.
    r, phi = p.norm(dim=-1), torch.atan2(p[..., 1], p[..., 0])
    tri = (((5 * phi / (2 * math.pi)) % 1.0) - 0.5).abs() * 2        # 1 at tips, 0 at notches
    return r - (0.45 + 0.55 * tri)


def _heart(p):
    lobes = torch.minimum(_disk(p, (-0.4, 0.3), 0.45), _disk(p, (0.4, 0.3), 0.45))
    point = _polygon(p - torch.tensor([0.0, -0.15], dtype=p.dtype), 4, 0.78, phase=math.pi / 4)
    return torch.minimum(lobes, point)


def _arrow(p):
    shaft = _box(p - torch.tensor([-0.35, 0.0], dtype=p.dtype), 0.6, 0.16)
    head = _polygon(p - torch.tensor([0.35, 0.0], dtype=p.dtype), 3, 0.62, phase=0.0)
    return torch.minimum(shaft, head)


SDFS = (
    lambda p: _disk(p, r=0.95),
    lambda p: _box(p, 0.75, 0.75),
    lambda p: _polygon(p, 3, 1.05, phase=math.pi / 6),
    _star,
    lambda p: torch.minimum(_box(p, 0.95, 0.28), _box(p, 0.28, 0.95)),
    lambda p: (p.norm(dim=-1) - 0.72).abs() - 0.22,
    _heart,
    lambda p: torch.maximum(_disk(p, r=0.95), -_disk(p, (0.45, 0.15), 0.8)),
    _arrow,
    lambda p: _polygon(p, 5, 1.0, phase=math.pi / 10),
)


def _uniform(g, n, lo, hi):
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _pixel_grid():
    """[SIZE, SIZE, 2] pixel centres in [-1, 1] (x right, y up)."""
    t = (torch.arange(SIZE) + 0.5) / SIZE * 2 - 1
    y, x = torch.meshgrid(-t, t, indexing="ij")
    return torch.stack([x, y], dim=-1)


def _shape_frame(grid, g, n):
    """Per-sample similarity transform: [n, S, S, 2] points in each shape's frame and the scales."""
    scale = _uniform(g, n, 0.38, 0.7)
    theta = _uniform(g, n, 0.0, 2 * math.pi)
    centre = (torch.rand(n, 2, generator=g) * 2 - 1) * (1 - scale)[:, None] * 0.85
    cos, sin = theta.cos(), theta.sin()
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # R(-theta)
    local = torch.einsum("nij,nhwj->nhwi", rot, grid[None] - centre[:, None, None, :])
    return local / scale[:, None, None, None], scale


def _background(g, n, grid):
    """Dark textured backgrounds: a base colour, a random grating and smooth noise. [n, 3, S, S]."""
    base = _uniform(g, (n, 3), 0.05, 0.4)
    freq = _uniform(g, (n, 2), -6.0, 6.0)
    phase = _uniform(g, n, 0.0, 2 * math.pi)
    grating = torch.sin(torch.einsum("nj,hwj->nhw", freq, grid) + phase[:, None, None])
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g) - 0.5,
                                             size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    amp = _uniform(g, (n, 1, 1, 1), 0.03, 0.12)
    return base[:, :, None, None] + amp * grating[:, None] + 0.25 * smooth


def _distractors(g, n, grid, strokes=2):
    """Thin random line segments (coverage [n, S, S]) that are not part of any class."""
    cover = torch.zeros(n, SIZE, SIZE)
    for _ in range(strokes):
        a, b = torch.rand(n, 2, generator=g) * 2 - 1, torch.rand(n, 2, generator=g) * 2 - 1
        ab = (b - a)[:, None, None, :]
        ap = grid[None] - a[:, None, None, :]
        t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-6)).clamp(0, 1)
        dist = (ap - t[..., None] * ab).norm(dim=-1)
        width = _uniform(g, (n, 1, 1), 0.03, 0.07)
        cover = torch.maximum(cover, torch.sigmoid((width - dist) * SIZE))
    return cover


def render(labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Draw one image per label.

    Args:
        labels: [n] int64 class indices into CLASS_NAMES.
        g: CPU generator; the images are a pure function of its state.
    Returns:
        [n, 3, 32, 32] uint8.
    """
    n, grid = len(labels), _pixel_grid()
    local, scale = _shape_frame(grid, g, n)
    sdf = torch.empty(n, SIZE, SIZE)
    for c, fn in enumerate(SDFS):
        rows = labels == c
        sdf[rows] = fn(local[rows])
    # Distance in pixels (x scale, x SIZE/2) through a sigmoid: anti-aliased edges.
    shape_cover = torch.sigmoid(-sdf * scale[:, None, None] * SIZE / 2 * 1.5)
    bg = _background(g, n, grid)
    ink = _uniform(g, (n, 3), 0.3, 0.75)[:, :, None, None]
    strokes = _distractors(g, n, grid)[:, None]
    img = bg * (1 - strokes) + ink * strokes
    # The shape is brighter than everything behind it: max-channel value in [0.75, 1].
    colour = torch.rand(n, 3, generator=g) * 0.7 + 0.3
    colour = colour / colour.max(dim=1, keepdim=True).values * _uniform(g, (n, 1), 0.75, 1.0)
    img = img * (1 - shape_cover[:, None]) + colour[:, :, None, None] * shape_cover[:, None]
    img = img + _uniform(g, (n, 1, 1, 1), 0.01, 0.06) * torch.randn(img.shape, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def generate(per_class: int, seed: int, batch: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` images of each of the ten classes, in a seeded order.

    Returns:
        images [10 * per_class, 3, 32, 32] uint8 and labels [10 * per_class] int64.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(CLASS_NAMES)).repeat_interleave(per_class)
    labels = labels[torch.randperm(len(labels), generator=g)]
    images = torch.cat([render(labels[i:i + batch], g) for i in range(0, len(labels), batch)]
                       or [torch.zeros(0, 3, SIZE, SIZE, dtype=torch.uint8)])      # per_class = 0
    return images, labels
