"""Clustering on the training device, for pseudo-label KCL (trainables.objectives.PseudoKCL).

The pool's features are clustered every few epochs, inside the training loop, so
everything here is shape-static tensor code with a fixed number of iterations: no
convergence test, no boolean indexing, no multinomial or bincount (both read values
back to the host on a GPU), so the host never waits for the device.
trainables.selection.kmeans is the selection's own k-means on the host, which may stop
early; this one may not.

Features are L2-normalised first, so both methods work on cosine similarity
s_ij = x_i . c_j (spherical k-means), the geometry the contrastive loss trains.

    kmeans    k-means++ seeding, then `iters` Lloyd steps:
                  a_i = argmax_j s_ij,   c_j = normalize(sum_{i: a_i = j} x_i)
              an emptied cluster keeps its previous centroid.
    sinkhorn  the same centroids, then a balanced assignment: the transport plan
              Q = diag(u) exp(S / eps) diag(v) whose rows sum to 1/N and columns to 1/M
              (Sinkhorn-Knopp, as in SeLa and SwAV), a_i = argmax_j Q_ij. It forces
              clusters of about N / M images each, whatever the classes' sizes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kmeans_pp(x: torch.Tensor, m: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding on the unit sphere: [N, D] normalised rows -> [m, D] centroids.

    Each new centroid is a point drawn with probability proportional to its squared
    distance to the nearest centroid so far (d^2 = 2 - 2 s on the sphere)."""
    first = torch.randint(len(x), (1,), device=x.device, generator=generator)
    centroids = x.new_zeros(m, x.shape[1])
    centroids[:1] = x.index_select(0, first)      # index_select: no host read of the index
    best = (x @ centroids[0]).clone()                      # [N] max similarity so far
    for j in range(1, m):
        d2 = (2 - 2 * best).clamp(min=0) + 1e-12           # > 0: a draw is always possible
        # a draw with probability d2 / sum(d2), as argmax(d2 / E), E ~ Exp(1) (multinomial's own
        # method, without its validity checks, which read values back to the host)
        pick = (d2 / torch.empty_like(d2).exponential_(generator=generator)).argmax().view(1)
        centroids[j:j + 1] = x.index_select(0, pick)
        best = torch.maximum(best, x @ centroids[j])
    return centroids


def lloyd(x: torch.Tensor, centroids: torch.Tensor, iters: int) -> torch.Tensor:
    """`iters` spherical Lloyd steps from `centroids` [M, D]; returns the new centroids.

    Sums and counts per cluster come from a one-hot [N, M] matrix product: deterministic on
    a GPU (index_add_'s float atomics are not) and sized without a host read (bincount's is)."""
    clusters = torch.arange(len(centroids), device=x.device)
    for _ in range(iters):
        onehot = ((x @ centroids.T).argmax(1)[:, None] == clusters).to(x.dtype)     # [N, M]
        sums, counts = onehot.T @ x, onehot.sum(0)                                  # [M, D], [M]
        centroids = torch.where(counts[:, None] > 0, F.normalize(sums, dim=1), centroids)
    return centroids


def sinkhorn_assign(scores: torch.Tensor, eps: float = 0.01, iters: int = 100) -> torch.Tensor:
    """Balanced hard assignment from similarities [N, M]: argmax of the entropic transport
    plan with uniform marginals (rows 1/N, columns 1/M). Computed in log space, so that a
    small eps cannot overflow exp."""
    n, m = scores.shape
    log_q = scores.float() / eps
    for _ in range(iters):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(m)
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(n)
    return log_q.argmax(1)


@torch.no_grad()
def cluster(features: torch.Tensor, m: int, method: str, generator: torch.Generator,
            iters: int = 20) -> torch.Tensor:
    """Pseudo-labels [N] int64 in [0, m) of features [N, D], by `method` (module docstring).

    m > N is clipped to N (every image its own cluster). The generator (on the features'
    device) draws the seeding, so a seeded trial clusters the same way every time."""
    x = F.normalize(features.float(), dim=1)
    centroids = lloyd(x, kmeans_pp(x, min(m, len(x)), generator), iters)
    scores = x @ centroids.T
    return sinkhorn_assign(scores) if method == "sinkhorn" else scores.argmax(1)
