import pytest
import torch
import torch.nn.functional as F

from trainables.config import TrialConfig
from trainables.losses import contrastive_loss, kcl_mask, simclr_mask, supcon_mask
from trainables.models import build_encoder
from trainables.objectives import LOSSES, QueueKCL, build_objective


def _cfg(**flat):
    return TrialConfig.from_flat({"model.width": 4, "model.proj_dim": 8, **flat})


def _objective(generator_seed=0, **flat):
    torch.manual_seed(0)
    cfg = _cfg(**flat)
    enc = build_encoder("cnn", 3, cfg.model.width, 32)
    return build_objective(enc, 10, cfg, torch.Generator().manual_seed(generator_seed))


Y = torch.tensor([0, 0, 1, 2, 2, 2])
# Mean positives per anchor over the 12 rows [view 1; view 2] of labels Y (class 0: 4 rows,
# class 1: 2 rows, class 2: 6 rows), by hand:
#   simclr:  the other view only                                   -> 1
#   supcon:  every other same-label row: (4*3 + 2*1 + 6*5) / 12     -> 11/3
#   kcl k=2: the other view + min(2, the other same-label rows):
#            (4*(1 + 2) + 2*(1 + 0) + 6*(1 + 2)) / 12               -> 8/3
CONTRASTIVE = {
    "simclr": (lambda labels, generator: simclr_mask(labels), 1.0),
    "supcon": (lambda labels, generator: supcon_mask(labels), 11 / 3),
    "kcl": (lambda labels, generator: kcl_mask(labels, 2, generator), 8 / 3),
    # pkcl before its first clustering (the warm-up): SimCLR's mask, whatever the labels
    "pkcl": (lambda labels, generator: simclr_mask(labels), 1.0),
}


def _views():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(6, 3, 32, 32, generator=g) for _ in range(2)]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_registered_loss_equals_its_formula_and_trains_every_parameter(name):
    obj = _objective(**{"loss.name": name, "loss.k": 2, "loss.temperature": 0.2})
    views = _views()[: obj.views]
    loss, n_pos = obj(views, Y, torch.arange(6))
    if name == "ce":
        # one view, a linear head on the features, plain cross-entropy; no positives
        assert obj.views == 1 and n_pos is None
        expected = F.cross_entropy(obj.head(obj.encoder(views[0])), Y)
    else:
        # both views through encoder and head, normalised; the loss's mask at t = 0.2 (a
        # generator seeded 0 draws KCL's positives as the objective's, seeded 0, drew them)
        make_mask, positives = CONTRASTIVE[name]
        mask = make_mask(torch.cat([Y, Y]), torch.Generator().manual_seed(0))
        z = F.normalize(obj.head(obj.encoder(torch.cat(views))), dim=1)
        expected = contrastive_loss(z, mask, 0.2)
        assert obj.views == 2
        assert float(n_pos) == pytest.approx(positives, rel=1e-6)
        assert float(n_pos) == pytest.approx(float(mask.sum(1).float().mean()), rel=1e-6)
    assert torch.allclose(loss, expected, rtol=1e-6, atol=0)
    # the gradient is the formula's, and it reaches every parameter (encoder and head)
    params = list(obj.parameters())              # the encoder's, then the head's
    got = torch.autograd.grad(loss, params)
    want = torch.autograd.grad(expected, params)
    for (pname, _), g, w in zip(obj.named_parameters(), got, want, strict=True):
        assert torch.allclose(g, w, rtol=1e-5, atol=1e-8), pname
        assert float(g.abs().max()) > 0, pname


def test_kcl_draws_its_positives_from_its_seeded_generator():
    labels = torch.cat([Y, Y])
    first = kcl_mask(labels, 2, torch.Generator().manual_seed(0))
    assert torch.equal(first, kcl_mask(labels, 2, torch.Generator().manual_seed(0)))
    assert not torch.equal(first, kcl_mask(labels, 2, torch.Generator().manual_seed(1)))
    # the same weights and views: generators seeded alike give the same loss, another seed
    # other positives and so another loss
    losses = []
    for seed in (0, 0, 1):
        obj = _objective(seed, **{"loss.name": "kcl", "loss.k": 2})
        losses.append(float(obj(_views(), Y, torch.arange(6))[0].detach()))
    assert losses[0] == losses[1] != losses[2]


def test_queue_mode_is_chosen_by_the_config():
    assert isinstance(_objective(**{"loss.mode": "queue"}), QueueKCL)
    assert not isinstance(_objective(**{"loss.mode": "batch"}), QueueKCL)


def test_queue_is_a_ring_buffer_of_keys_and_labels():
    obj = _objective(**{"loss.mode": "queue", "loss.queue_size": 5})
    keys = torch.arange(7 * 8, dtype=torch.float).view(7, 8)
    obj._enqueue(keys[:3], torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12]))
    assert int(obj.queue_len) == 3 and int(obj.queue_ptr) == 3
    obj._enqueue(keys[3:7], torch.tensor([3, 4, 5, 6]), torch.tensor([13, 14, 15, 16]))
    # slots 3, 4 then wrap to 0, 1: the two oldest (0, 1) are overwritten
    assert obj.queue_labels.tolist() == [5, 6, 2, 3, 4]
    assert obj.queue_ids.tolist() == [15, 16, 12, 13, 14]
    assert torch.equal(obj.queue[0], keys[5]) and int(obj.queue_len) == 5 and int(obj.queue_ptr) == 2


def test_a_batch_larger_than_the_queue_keeps_its_newest_keys():
    obj = _objective(**{"loss.mode": "queue", "loss.queue_size": 4})
    keys = torch.arange(6 * 8, dtype=torch.float).view(6, 8)
    obj._enqueue(keys, torch.arange(6), torch.arange(6))
    assert sorted(obj.queue_labels.tolist()) == [2, 3, 4, 5] and int(obj.queue_len) == 4
    obj._enqueue(keys[:1], torch.tensor([0]), torch.tensor([0]))   # the ring still advances
    assert int(obj.queue_len) == 4 and 0 in obj.queue_labels.tolist()


def test_queue_gives_a_lone_tail_sample_its_k_positives():
    # Class 9 appears once in the batch: batch-mode KCL has only the other view for it,
    # queue-mode KCL draws k more from the queue once the queue holds class-9 keys.
    y = torch.tensor([0, 0, 0, 9])
    obj = _objective(**{"loss.mode": "queue", "loss.k": 3, "loss.queue_size": 64})
    obj._enqueue(torch.nn.functional.normalize(torch.randn(8, 8), dim=1), torch.full((8,), 9),
                 torch.arange(100, 108))
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    k = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    _, mean_pos = obj._direction(q, k, y, torch.arange(4), obj.queue[:8], obj.queue_labels[:8],
                                 obj.queue_ids[:8])
    # rows 0-2 (class 0): own key + the 2 other class-0 keys; row 3: own key + 3 of the 8 queued
    assert abs(float(mean_pos) - (3 * 3 + 4) / 4) < 1e-6


def test_queue_direction_equals_the_masked_loss_with_keys():
    obj = _objective(**{"loss.mode": "queue", "loss.k": 0})
    q = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1)
    k = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1)
    queue = torch.nn.functional.normalize(torch.randn(6, 8, dtype=torch.float64), dim=1)
    loss, _ = obj._direction(q, k, torch.tensor([0, 1, 2, 3]), torch.arange(4), queue,
                             torch.arange(6), torch.arange(10, 16))
    # k = 0: the anchor's own key is its only positive; the denominator is every key
    logits = q @ torch.cat([k, queue]).T / obj.temperature
    expected = -(logits.diagonal()[:4] - torch.logsumexp(logits, 1)).mean()
    assert torch.allclose(loss, expected)
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[:, :4] = torch.eye(4, dtype=torch.bool)
    assert torch.allclose(loss, contrastive_loss(q, mask, obj.temperature, keys=torch.cat([k, queue])))


def test_momentum_update_moves_keys_towards_the_online_encoder():
    obj = _objective(**{"loss.mode": "queue", "loss.momentum": 0.9})
    with torch.no_grad():
        for p in obj.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in obj.key_encoder.parameters()]
    obj._momentum_update()
    for b, k, q in zip(before, obj.key_encoder.parameters(), obj.encoder.parameters()):
        assert torch.allclose(k, 0.9 * b + 0.1 * q, atol=1e-6)


def test_an_older_key_of_the_anchors_own_image_is_a_positive_not_a_negative():
    obj = _objective(**{"loss.mode": "queue", "loss.k": 0})
    q = torch.nn.functional.normalize(torch.randn(2, 8, dtype=torch.float64), dim=1)
    k = torch.nn.functional.normalize(torch.randn(2, 8, dtype=torch.float64), dim=1)
    queue = torch.nn.functional.normalize(torch.randn(3, 8, dtype=torch.float64), dim=1)
    # queue slot 1 holds image 7's key from an earlier step; anchor 0 is image 7 again
    loss, mean_pos = obj._direction(q, k, torch.tensor([0, 1]), torch.tensor([7, 8]), queue,
                                    torch.tensor([0, 0, 1]), torch.tensor([3, 7, 4]))
    assert float(mean_pos) == 1.5
    logits = q @ torch.cat([k, queue]).T / obj.temperature
    log_prob = logits - torch.logsumexp(logits, 1, keepdim=True)
    expected = -((log_prob[0, 0] + log_prob[0, 3]) / 2 + log_prob[1, 1]) / 2
    assert torch.allclose(loss, expected)


def test_empty_queue_slots_change_nothing():
    # The whole queue goes into the loss (fixed shapes, no host-device sync); its empty
    # slots (label -1) must count exactly as if they were not there.
    obj = _objective(**{"loss.mode": "queue", "loss.k": 5})   # k >= candidates: no random draw
    q = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1)
    k = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1)
    filled = torch.nn.functional.normalize(torch.randn(3, 8, dtype=torch.float64), dim=1)
    y, ids, labels, qids = torch.tensor([0, 1, 0, 1]), torch.arange(4), torch.tensor([0, 1, 1]), torch.arange(9, 12)
    queue = torch.cat([filled, torch.zeros(5, 8, dtype=torch.float64)])
    obj.generator = torch.Generator().manual_seed(0)
    sliced, pos_sliced = obj._direction(q, k, y, ids, filled, labels, qids)
    obj.generator = torch.Generator().manual_seed(0)
    full, pos_full = obj._direction(q, k, y, ids, queue, torch.cat([labels, torch.full((5,), -1)]),
                                    torch.cat([qids, torch.full((5,), -1)]))
    assert torch.allclose(sliced, full) and float(pos_sliced) == float(pos_full)


def test_bf16_autocast_and_float32_losses_agree():
    # The GPU trains under bf16 autocast; the contrastive logits stay float32 (losses.py).
    # Same weights, views and positive draws: the two precisions give the same loss
    # within bf16's ~3 significant digits. (CPU autocast runs the same bf16 kernels' maths.)
    x = [torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    y = torch.arange(32) % 4
    for name in [*LOSSES, "kcl-queue"]:
        flat = {"loss.name": "kcl", "loss.mode": "queue"} if name == "kcl-queue" else {"loss.name": name}
        losses = []
        for bf16 in (False, True):
            obj = _objective(**flat).eval()           # eval: BN statistics fixed, the same in both
            obj.generator = torch.Generator().manual_seed(0)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, _ = obj(x[: obj.views], y, torch.arange(32))
                assert obj.encoder(x[0]).dtype == (torch.bfloat16 if bf16 else torch.float32)
            losses.append(float(loss.detach()))
        assert abs(losses[1] - losses[0]) <= 0.02 * abs(losses[0]), (name, losses)
        assert losses[0] > 0.1                         # a real loss, not a vacuous 0 == 0


def _balfeat_by_hand(q, k_own, queue, queue_labels, labels, k, t):
    """BalFeat's loss re-typed from its official code (kcl_builder.KCL.forward, loss type v1,
    util.SoftCrossEntropyLoss), row by row: logits [q.k_own, q.queue] / t; soft labels 1 on
    the own key and on the first k same-label queue slots, normalised; cross-entropy."""
    losses = []
    for i in range(len(q)):
        logits = torch.cat([(q[i] * k_own[i]).sum()[None], queue @ q[i]]) / t
        chosen = [j for j in range(len(queue)) if queue_labels[j] == labels[i]][:k]
        soft = torch.zeros(len(queue) + 1, dtype=q.dtype)
        soft[0] = 1.0
        soft[[1 + j for j in chosen]] = 1.0
        soft = soft / soft.sum()
        losses.append(-(soft * torch.log_softmax(logits, 0)).sum())
    return torch.stack(losses).mean()


@pytest.mark.parametrize("k", [0, 2, 50])
def test_the_balfeat_variant_equals_an_independent_retyping_of_the_official_loss(k):
    from trainables.losses import balfeat_kcl_loss
    g = torch.Generator().manual_seed(k)
    q, k_own, queue = (F.normalize(torch.randn(n, 8, generator=g, dtype=torch.float64), dim=1) for n in (6, 6, 40))
    labels, queue_labels = torch.randint(0, 4, (6,), generator=g), torch.randint(0, 4, (40,), generator=g)
    loss, n_pos = balfeat_kcl_loss(q, k_own, queue, queue_labels, labels, k, 0.2)
    assert torch.allclose(loss, _balfeat_by_hand(q, k_own, queue, queue_labels, labels, k, 0.2))
    counts = [(queue_labels == y).sum().item() for y in labels]
    assert float(n_pos) == pytest.approx(sum(1 + min(k, c) for c in counts) / 6)
    # never-written slots (label -1, masked out) count as if the queue were shorter
    empty = torch.cat([queue, torch.zeros(5, 8, dtype=torch.float64)])
    labels_empty = torch.cat([queue_labels, torch.full((5,), -1)])
    masked, _ = balfeat_kcl_loss(q, k_own, empty, labels_empty, labels, k, 0.2, queue_valid=labels_empty >= 0)
    assert torch.allclose(masked, loss)


def test_the_balfeat_objective_runs_one_direction_without_the_batchs_other_keys():
    from trainables.losses import balfeat_kcl_loss
    obj = _objective(**{"loss.mode": "queue", "loss.kcl_variant": "balfeat", "loss.k": 3, "loss.queue_size": 16})
    views, y, ids = _views(), Y, torch.arange(6)
    loss, n_pos = obj(views, y, ids)
    loss.backward()                      # the enqueue after the loss left its graph intact
    # by hand, from the same encoders (the momentum update already ran: the key encoder is a copy)
    q = F.normalize(obj.head(obj.encoder(views[0])), dim=1)
    k_own = obj._keys(views[1])
    empty = torch.zeros(16, 8)
    expected, _ = balfeat_kcl_loss(q, k_own, empty, torch.full((16,), -1), y, 3, obj.temperature,
                                   queue_valid=torch.zeros(16, dtype=torch.bool))
    assert torch.allclose(loss, expected, atol=1e-6) and float(n_pos) == 1.0     # empty queue: own key only
    # view 2's keys went into the queue, with their labels and image ids
    assert torch.allclose(obj.queue[:6], k_own, atol=1e-6) and obj.queue_labels[:6].tolist() == Y.tolist()
    _, n_pos = obj(views, y, ids)        # now the queue holds them: the first 3 same-label slots each
    assert float(n_pos) == pytest.approx((2 * (1 + 2) + 1 * (1 + 1) + 3 * (1 + 3)) / 6)
