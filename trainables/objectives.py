"""Pretraining objectives: the encoder plus what a loss needs around it, and LOSSES,
the registry that `loss.name` (and `loss.mode`) choose from.

The training loop sees one interface, chosen once at construction from LOSSES:

    objective.views                         augmented views per image (1 or 2)
    objective(views, y, ids) -> (loss, n_pos)
                                            views: list of [B, C, H, W]; y: [B] labels;
                                            ids: [B] image indices in the pool;
                                            n_pos: mean positives per anchor ([] tensor)
                                            or None for cross-entropy
    objective.reads                         config keys it reads beyond the ones
                                            every trial reads (data, model, optim, probe, eval)
    objective.prepare(data)                 once, before training (and before a resume
                                            restores its state): size buffers to the pool
    objective.start_epoch(epoch, data)      before each epoch (0-based): e.g. re-cluster

Adding a contrastive loss: a mask function in trainables.losses, and one entry
`"name": Loss({"batch": BatchContrastive}, mask=name_mask)` below. Any other loss:
an objective class with the interface above, and its entry (docs/architecture.md).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import TrialConfig
from trainables.losses import (
    balfeat_kcl_loss,
    contrastive_loss,
    kcl_mask,
    same_label_mask,
    sample_k_per_row,
    simclr_mask,
    supcon_mask,
)
from trainables.models import projection_head


CONTRASTIVE_KEYS = ("loss.temperature", "model.proj_dim")


class Objective(nn.Module):
    """The hooks the loop calls around the epochs; most objectives need neither."""

    def prepare(self, data) -> None:
        """Once, before training; data: trainables.pretrain.TrainSet."""

    def start_epoch(self, epoch: int, data) -> None:
        """Before epoch `epoch` (0-based), also the first epoch after a resume."""


class CrossEntropy(Objective):
    """Supervised CE: a linear head on the encoder's features, one view."""
    views = 1
    reads = ()

    def __init__(self, encoder: nn.Module, num_classes: int, cfg: TrialConfig, generator=None):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, num_classes)

    def forward(self, views, y, ids):
        return F.cross_entropy(self.head(self.encoder(views[0])), y), None


class BatchContrastive(Objective):
    """SimCLR, SupCon or batch-mode KCL: positives come from the 2B rows of the batch.

    z = normalize(g(f([x1; x2]))), rows [view 1 of images 0..B-1, view 2 of 0..B-1];
    the loss's mask function (its LOSSES entry) picks the positives.
    """
    views = 2
    reads = CONTRASTIVE_KEYS

    def __init__(self, encoder: nn.Module, num_classes: int, cfg: TrialConfig, generator=None):
        super().__init__()
        self.encoder = encoder
        self.head = projection_head(encoder.feature_dim, cfg.model.proj_dim)
        self.mask_fn = LOSSES[cfg.loss.name].mask
        self.k, self.temperature, self.generator = cfg.loss.k, cfg.loss.temperature, generator

    def positives(self, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """[2B, 2B] bool mask of the batch's rows (labels y [B], pool indices ids [B])."""
        return self.mask_fn(torch.cat([y, y]), self.k, self.generator)

    def forward(self, views, y, ids):
        z = F.normalize(self.head(self.encoder(torch.cat(views))), dim=1)
        mask = self.positives(y, ids)
        return contrastive_loss(z, mask, self.temperature), mask.sum(1).float().mean()


class QueueKCL(Objective):
    """KCL in its MoCo form (Kang et al.'s implementation): keys from a momentum
    encoder, and a queue of past keys with their labels to draw positives from,
    so that a tail class whose batch holds one image still has k positives.

    For the anchors of view a (queries q = normalize(g(f(x_a))), [B, D]) the keys
    are the other view's momentum keys [B, D] followed by the queue [Q, D]; the
    positives are the anchor's own key plus k keys drawn at random among the
    other same-label keys (batch and queue). Both directions are averaged; then
    view 1's keys are enqueued, oldest out.

    A queue as large as the train set still holds an older key of the anchor's
    own image; it is a view of the same image, so it counts as a positive, never
    as a negative. No Shuffle-BN: on one device the batch's keys share BN
    statistics, a leak MoCo avoids across GPUs; the other images' keys in the
    batch are negatives too, which blunts it.

    `loss.kcl_variant`: "harness" is the above. "balfeat" is BalFeat's official loss
    (trainables.losses.balfeat_kcl_loss), which differs from it in four ways:
    1. the batch's other keys are not keys (only the anchor's own key and the queue);
    2. the k extra positives are the first k same-label queue slots, not a random draw;
    3. the anchor's older keys in the queue are ordinary candidates: a positive if among
       those k, otherwise a negative;
    4. one direction (view 1's queries against view 2's keys), not both averaged.
    Both enqueue the keys of one view, and both leave never-written queue slots out of
    the denominators (BalFeat fills its queue in a pass before training instead).
    """
    views = 2
    reads = (*CONTRASTIVE_KEYS, "loss.queue_size", "loss.momentum", "loss.kcl_variant")

    def __init__(self, encoder: nn.Module, num_classes: int, cfg: TrialConfig, generator=None):
        super().__init__()
        self.encoder = encoder
        self.head = projection_head(encoder.feature_dim, cfg.model.proj_dim)
        self.key_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.key_head = copy.deepcopy(self.head).requires_grad_(False)
        self.register_buffer("queue", torch.zeros(cfg.loss.queue_size, cfg.model.proj_dim))
        self.register_buffer("queue_labels", torch.full((cfg.loss.queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_ids", torch.full((cfg.loss.queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_len", torch.zeros((), dtype=torch.long))   # slots filled
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))   # next write
        self.k, self.temperature, self.variant = cfg.loss.k, cfg.loss.temperature, cfg.loss.kcl_variant
        self.momentum, self.generator = cfg.loss.momentum, generator

    @torch.no_grad()
    def _momentum_update(self):
        """theta_k <- m theta_k + (1 - m) theta_q (BN running stats copied too)."""
        for online, key in ((self.encoder, self.key_encoder), (self.head, self.key_head)):
            for p_k, p_q in zip(key.parameters(), online.parameters()):
                p_k.lerp_(p_q.detach(), 1 - self.momentum)
            for b_k, b_q in zip(key.buffers(), online.buffers()):
                b_k.copy_(b_q)

    @torch.no_grad()
    def _keys(self, x):
        return F.normalize(self.key_head(self.key_encoder(x)), dim=1)

    @torch.no_grad()
    def _enqueue(self, keys, labels, ids):
        size = len(self.queue)
        keys, labels, ids = keys[-size:], labels[-size:], ids[-size:]   # a batch larger than the queue
        idx = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_labels[idx], self.queue_ids[idx] = labels, ids
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % size)
        self.queue_len.copy_((self.queue_len + len(keys)).clamp(max=size))

    def _direction(self, q, k_other, y, ids, queue, queue_labels, queue_ids):
        """Loss of anchors q [B, D] against keys [k_other; queue]; returns (loss, mean positives).

        Empty queue slots (label -1) are neither negatives nor positives: left out of
        the denominators by a mask, so that shapes never depend on how full the queue is.
        """
        keys = torch.cat([k_other, queue.to(q.dtype)])
        key_labels = torch.cat([y, queue_labels])
        # The anchor's own image: its other view, and any older key of it in the queue.
        own = ids[:, None] == torch.cat([ids, queue_ids])[None, :]
        extra = sample_k_per_row(same_label_mask(y, key_labels) & ~own, self.k, self.generator)
        mask = own | extra
        valid = torch.cat([torch.ones_like(y, dtype=torch.bool), queue_labels >= 0])
        return (contrastive_loss(q, mask, self.temperature, keys=keys, key_valid=valid),
                mask.sum(1).float().mean())

    def _balfeat(self, views, y, ids):
        """BalFeat's loss: view 1's queries against view 2's own keys and the queue."""
        q = F.normalize(self.head(self.encoder(views[0])), dim=1)
        k_own = self._keys(views[1])
        # a copy: the enqueue below overwrites the queue that the backward pass reads
        loss, n_pos = balfeat_kcl_loss(q, k_own, self.queue.clone(), self.queue_labels, y, self.k,
                                       self.temperature, queue_valid=self.queue_labels >= 0)
        self._enqueue(k_own, y, ids)
        return loss, n_pos

    def forward(self, views, y, ids):
        self._momentum_update()
        if self.variant == "balfeat":
            return self._balfeat(views, y, ids)
        q1, q2 = F.normalize(self.head(self.encoder(torch.cat(views))), dim=1).chunk(2)
        k1, k2 = self._keys(torch.cat(views)).chunk(2)
        queue = (self.queue, self.queue_labels, self.queue_ids)
        loss1, pos1 = self._direction(q1, k2, y, ids, *queue)
        loss2, pos2 = self._direction(q2, k1, y, ids, *queue)
        self._enqueue(k1, y, ids)
        return (loss1 + loss2) / 2, (pos1 + pos2) / 2


class PseudoKCL(BatchContrastive):
    """Pseudo-label KCL (`loss=pkcl`): batch-mode KCL whose positives share a *pseudo*-class,
    a cluster of the encoder's own features of the unlabelled train set. It never reads
    a label: `y` is ignored, and the pseudo-labels come from trainables.clustering.

    Epochs 0 .. warmup-1 are SimCLR (only the other view is a positive); at epoch warmup
    and every `recluster_every` epochs after it, the train set's features (eval mode)
    are clustered into M = loss.clusters groups on the device, and until the next
    re-clustering the mask is kcl_mask(pseudo-labels):

        P_i = {the other view of i} + k rows drawn among the batch's other rows in i's cluster

    So k = 0 is SimCLR exactly (no clustering, no draw), and pseudo-labels equal to the
    true labels make it KCL exactly. `pseudo` [N] (the pool's pseudo-labels, -1 where
    never assigned) is a buffer, so a checkpoint resumes with the clusters it had.
    """
    reads = (*CONTRASTIVE_KEYS, "loss.k", "loss.clusters", "loss.warmup_epochs", "loss.recluster_every",
             "loss.cluster_method")

    def __init__(self, encoder: nn.Module, num_classes: int, cfg: TrialConfig, generator=None):
        super().__init__(encoder, num_classes, cfg, generator)
        self.clusters, self.method = cfg.loss.clusters, cfg.loss.cluster_method
        self.warmup, self.every = cfg.loss.warmup_epochs, cfg.loss.recluster_every
        self.clustered = False          # host-side: whether the pseudo-labels are in use this epoch
        self.register_buffer("pseudo", torch.full((0,), -1, dtype=torch.long))

    def prepare(self, data) -> None:
        self.pseudo = torch.full((len(data.images),), -1, dtype=torch.long, device=data.images.device)

    def start_epoch(self, epoch: int, data) -> None:
        self.clustered = self.k > 0 and epoch >= self.warmup
        if self.clustered and (epoch - self.warmup) % self.every == 0:
            from trainables.clustering import cluster
            from trainables.probe import extract_features
            feats = extract_features(self.encoder, data.images[data.indices], data.mean, data.std)
            self.pseudo[data.indices] = cluster(feats, self.clusters, self.method, self.generator)

    def positives(self, y, ids):
        if not self.clustered:                      # warm-up: SimCLR's mask, whatever k is
            return simclr_mask(torch.cat([ids, ids]))
        pseudo = self.pseudo[ids]
        return self.mask_fn(torch.cat([pseudo, pseudo]), self.k, self.generator)


@dataclass(frozen=True)
class Loss:
    """A registered loss: its objective per `loss.mode`, the positives' mask of a
    batch-contrastive loss, and config keys it reads beyond its objective's."""
    modes: dict[str, type[nn.Module]]
    mask: Callable | None = None          # labels [2n], k, generator -> [2n, 2n] bool
    reads: tuple[str, ...] = field(default=())

    def keys(self, mode: str) -> set[str]:
        """Every config key a trial with this loss and mode reads (of LOSS_KEYS)."""
        choice = ("loss.mode",) if len(self.modes) > 1 else ()
        return {*self.reads, *self.modes[mode].reads, *choice}


LOSSES = {
    "ce": Loss({"batch": CrossEntropy}),
    "simclr": Loss({"batch": BatchContrastive}, mask=simclr_mask),
    "supcon": Loss({"batch": BatchContrastive}, mask=supcon_mask),
    # KCL draws its extra positives from the batch, or from a MoCo-style queue
    "kcl": Loss({"batch": BatchContrastive, "queue": QueueKCL}, mask=kcl_mask, reads=("loss.k",)),
    # label-free KCL: positives from clusters of the encoder's own features
    "pkcl": Loss({"batch": PseudoKCL}, mask=kcl_mask),
}
# Every loss-specific key: a trial leaves the ones its loss does not read null in its results.
LOSS_KEYS = set().union(*(loss.keys(mode) for loss in LOSSES.values() for mode in loss.modes))


def build_objective(encoder: nn.Module, num_classes: int, cfg: TrialConfig, generator=None) -> nn.Module:
    """The objective of cfg.loss (its name and mode), chosen once."""
    return LOSSES[cfg.loss.name].modes[cfg.loss.mode](encoder, num_classes, cfg, generator)
