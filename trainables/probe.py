"""Evaluation on cached features: extraction, the kNN monitor and linear probes.

Features are extracted once, without augmentation, with the encoder frozen;
the probes and the kNN vote then work on the cached [N, d] tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import ProbeConfig


def normalize_images(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float, standardised per channel (mean, std: [C, 1, 1])."""
    return (x_uint8.float() / 255 - mean) / std


@torch.no_grad()
def extract_features(encoder: nn.Module, images: torch.Tensor, mean, std, batch: int = 512) -> torch.Tensor:
    """Encoder features of uint8 images [N, C, H, W] -> [N, d] float32, in eval mode."""
    was_training = encoder.training
    encoder.eval()
    feats = [encoder(normalize_images(images[i:i + batch], mean, std)).float()
             for i in range(0, len(images), batch)]
    encoder.train(was_training)
    return torch.cat(feats)


@torch.no_grad()
def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                num_classes: int, k: int = 20, temperature: float = 0.07) -> torch.Tensor:
    """Weighted kNN vote on cosine similarity (Wu et al., 2018).

    score_c(q) = sum over the k most similar bank rows j with label c of exp(cos(q, b_j) / T).
    bank: [N, d], bank_labels: [N], queries: [M, d] -> predictions [M].
    """
    sim = F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).T       # [M, N]
    top_sim, top_idx = sim.topk(min(k, len(bank)), dim=1)
    votes = torch.zeros(len(queries), num_classes, device=queries.device)
    votes.scatter_add_(1, bank_labels[top_idx], (top_sim / temperature).exp())
    return votes.argmax(1)


class LinearProbe(nn.Module):
    """(W, b) on features standardised with the probe's own train-set statistics."""

    def __init__(self, feats: torch.Tensor, num_classes: int):
        super().__init__()
        self.register_buffer("mean", feats.mean(0))
        self.register_buffer("std", feats.std(0).clamp(min=1e-6) if len(feats) > 1 else torch.ones_like(feats[0]))
        self.linear = nn.Linear(feats.shape[1], num_classes)
        # Zero start: the problem is convex, and the fit then depends only on the generator.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear((feats - self.mean) / self.std)


def fit_linear_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: ProbeConfig,
                     generator: torch.Generator, balanced_sampling: bool = False,
                     probe: LinearProbe | None = None) -> LinearProbe:
    """Cross-entropy, Adam, mini-batches for cfg.epochs epochs on cached features.

    feats: [N, d], labels: [N]. With balanced_sampling, each batch is drawn with
    replacement with probability proportional to 1 / n_class(label), so that every
    class is seen equally often in expectation. A given `probe` is trained further
    (its standardisation kept) instead of a new one.
    """
    probe = probe if probe is not None else LinearProbe(feats, num_classes).to(feats.device)
    probe.train()
    opt = torch.optim.Adam(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n, batch = len(feats), min(cfg.batch_size, len(feats))
    weights = 1.0 / torch.bincount(labels, minlength=num_classes).float()[labels]
    for _ in range(cfg.epochs):
        if balanced_sampling:
            order = torch.multinomial(weights, n, replacement=True, generator=generator)
        else:
            order = torch.randperm(n, generator=generator, device=feats.device)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(probe(feats[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return probe.eval()


@torch.no_grad()
def predict(probe: LinearProbe, feats: torch.Tensor) -> torch.Tensor:
    return probe(feats).argmax(1)
