"""Losses: one masked contrastive function, and the masks that make it SimCLR,
SupCon or k-positive contrastive learning (KCL, Kang et al., ICLR 2021).

Notation: M anchors with L2-normalised embeddings z_i, keys zk_j (the anchors
themselves unless a separate key set is given), temperature t, positives P_i.

    loss_i = -(1/|P_i|) * sum_{p in P_i} log( exp(z_i.zk_p/t) / sum_{j in D_i} exp(z_i.zk_j/t) )
    loss   = mean of loss_i over the anchors with |P_i| >= 1

D_i is every key except the anchor itself when keys are the anchors
(the [M, M] case), and every key when a separate key set is given (the
momentum-encoder / queue case of MoCo-style KCL).

A loss is the choice of mask:
    SimCLR: P_i = {the other view of i}
    SupCon: P_i = {every other row with i's label}
    KCL:    P_i = {the other view of i} + k rows drawn at random from the other
            rows with i's label (all of them when fewer than k exist)
so KCL(k=0) == SimCLR and KCL(k >= largest same-class count) == SupCon.
Each mask is registered with its objective in trainables.objectives.LOSSES.
"""

from __future__ import annotations

import torch


def contrastive_loss(z: torch.Tensor, pos_mask: torch.Tensor, temperature: float,
                     keys: torch.Tensor | None = None, key_valid: torch.Tensor | None = None) -> torch.Tensor:
    """The masked contrastive loss (module docstring's equation).

    Args:
        z: [M, D] anchors, rows L2-normalised.
        pos_mask: [M, M] bool with a false diagonal (keys is None), or [M, K]
            bool (keys given); True marks a positive pair.
        temperature: t > 0.
        keys: optional [K, D] L2-normalised keys; None means the anchors are
            their own keys and each anchor is excluded from its denominator.
        key_valid: optional [K] bool; False keys (empty queue slots) are left out
            of every denominator, as if absent. Masking instead of slicing keeps
            shapes fixed, so the host never waits for the device to learn them.
    Returns:
        scalar; 0 (with a graph) when no anchor has a positive.
    """
    self_keys = keys is None
    keys = z if self_keys else keys
    # At least float32, autocast off: bf16 logits err by ~0.01 at t = 0.1.
    dtype = torch.promote_types(z.dtype, torch.float32)
    with torch.autocast(z.device.type, enabled=False):
        logits = (z.to(dtype) @ keys.to(dtype).T) / temperature      # [M, K]
    if self_keys:
        eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(eye, float("-inf"))               # j != i
    if key_valid is not None:
        logits = logits.masked_fill(~key_valid[None, :], float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    # where(), not multiplication: log_prob is -inf on the diagonal and -inf * 0 is NaN.
    pos_log_prob = torch.where(pos_mask, log_prob, torch.zeros_like(log_prob)).sum(1)
    n_pos = pos_mask.sum(1)
    has_pos = n_pos > 0
    # The mean over anchors with a positive, written without boolean indexing (whose
    # output shape would make the host wait for the device every step); an anchor
    # without positives contributes 0 / 1 = 0, and no anchor at all gives 0 with a graph.
    per_anchor = -pos_log_prob / n_pos.clamp(min=1)
    return per_anchor.sum() / has_pos.sum().clamp(min=1)


def other_view_mask(n: int, device=None) -> torch.Tensor:
    """[2n, 2n] bool: row i (view a of image i mod n) is paired with the other view.

    Rows are ordered [view 1 of images 0..n-1, view 2 of images 0..n-1].
    """
    idx = torch.arange(2 * n, device=device)
    partner = (idx + n) % (2 * n)
    return idx[None, :] == partner[:, None]


def same_label_mask(labels: torch.Tensor, key_labels: torch.Tensor | None = None) -> torch.Tensor:
    """[M, K] bool: label_i == key_label_j, with a false diagonal when keys are the anchors."""
    self_keys = key_labels is None
    key_labels = labels if self_keys else key_labels
    mask = labels[:, None] == key_labels[None, :]
    if self_keys:
        mask.fill_diagonal_(False)
    return mask


def sample_k_per_row(candidates: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep at most k True entries per row of `candidates`, chosen uniformly at random.

    Args:
        candidates: [M, K] bool.
        k: positives wanted per row; rows with fewer candidates keep all of them.
    Returns:
        [M, K] bool, a subset of candidates with min(k, row count) entries per row.
    """
    if k <= 0:
        return torch.zeros_like(candidates)
    k = min(k, candidates.shape[1])
    # Random scores, -inf where not a candidate: the top k are k uniform draws without
    # replacement among the candidates (the -inf ones are dropped by the final &).
    scores = torch.rand(candidates.shape, device=candidates.device, generator=generator)
    scores = scores.masked_fill(~candidates, float("-inf"))
    chosen = torch.zeros_like(candidates)
    chosen.scatter_(1, scores.topk(k, dim=1).indices, True)
    return chosen & candidates


def first_k_per_row(candidates: torch.Tensor, k: int) -> torch.Tensor:
    """[M, K] bool: the first k True entries of each row (lowest column index), all of a
    row with fewer. BalFeat picks its positives with topk over a 0/1 mask, whose choice
    among equal values torch leaves unspecified; this is that choice made in slot order."""
    return candidates & (candidates.cumsum(1) <= k)


def balfeat_kcl_loss(q: torch.Tensor, k_own: torch.Tensor, queue: torch.Tensor, queue_labels: torch.Tensor,
                     labels: torch.Tensor, k: int, temperature: float,
                     queue_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Queue-mode KCL as BalFeat's official code computes it (moco/kcl_builder.py, loss
    type v1, with its soft-label cross-entropy):

        logits_i = [q_i.k_i, q_i.queue_1, ..., q_i.queue_K] / t         (the batch's other keys: not keys)
        P_i      = {k_i} + the first k queue slots with label y_i          (older keys of image i included,
                                                                         as ordinary same-label candidates)
        loss     = mean_i  -(1/|P_i|) sum_{p in P_i} log softmax(logits_i)_p    (one direction: view 1 -> 2)

    Args:
        q: [B, D] L2-normalised queries (view 1); k_own: [B, D] their own keys (view 2).
        queue: [K, D] L2-normalised keys; queue_labels: [K] (-1: a slot never written).
        labels: [B]; k: positives taken from the queue; temperature: t > 0.
        queue_valid: optional [K] bool, False slots left out of every denominator (the
            harness fills its queue while training; BalFeat fills it before, in a pass).
    Returns:
        (the loss, the mean number of positives per anchor).
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(q.device.type, enabled=False):
        own = (q.to(dtype) * k_own.to(dtype)).sum(1, keepdim=True)               # [B, 1]
        logits = torch.cat([own, q.to(dtype) @ queue.to(dtype).T], dim=1) / temperature   # [B, 1 + K]
    if queue_valid is not None:
        valid = torch.cat([torch.ones_like(queue_valid[:1]), queue_valid])
        logits = logits.masked_fill(~valid[None, :], float("-inf"))
    same = (labels[:, None] == queue_labels[None, :]) & (queue_labels[None, :] >= 0)
    positives = torch.cat([torch.ones_like(labels[:, None], dtype=torch.bool), first_k_per_row(same, k)], dim=1)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = positives.sum(1)
    per_anchor = -torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(1) / n_pos
    return per_anchor.mean(), n_pos.float().mean()


def simclr_mask(labels: torch.Tensor, k: int = 0, generator=None) -> torch.Tensor:
    """[2n, 2n]: the other view is the only positive. labels: [2n] (unused)."""
    return other_view_mask(len(labels) // 2, labels.device)


def supcon_mask(labels: torch.Tensor, k: int = 0, generator=None) -> torch.Tensor:
    """[2n, 2n]: every other row with the same label (the other view included)."""
    return same_label_mask(labels)


def kcl_mask(labels: torch.Tensor, k: int, generator=None) -> torch.Tensor:
    """[2n, 2n]: the other view plus k random same-label rows among the rest."""
    view = other_view_mask(len(labels) // 2, labels.device)
    extra = sample_k_per_row(same_label_mask(labels) & ~view, k, generator)
    return view | extra

