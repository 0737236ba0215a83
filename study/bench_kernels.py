"""The benchmark's measuring tools and its kernel-level comparisons: the masked
contrastive loss against a per-anchor loop (time and peak memory), FLOPs of one
training step, and the device's matmul peak. `python -m study.bench` runs them."""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from trainables.config import TrialConfig
from trainables.losses import contrastive_loss, supcon_mask


def median_time(fn, repeats: int) -> float:
    fn()                                                # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)



class PeakMemory:
    """Peak bytes of tensor storage allocated by torch ops inside the block, on any
    device (a TorchDispatchMode: sees every op's outputs; a storage counts from its
    first tensor's creation until its last tensor created here is freed). Inputs and
    views of them are not allocations."""

    def __new__(cls):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        class Mode(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.live, self.peak, self.refs = 0, 0, {}

            def _free(self, key, nbytes):
                self.refs[key] -= 1
                if self.refs[key] == 0:
                    del self.refs[key]
                    self.live -= nbytes

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                import weakref
                out = func(*args, **(kwargs or {}))
                inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                          if isinstance(t, torch.Tensor)}
                for t in tree_flatten(out)[0]:
                    if not isinstance(t, torch.Tensor):
                        continue
                    storage = t.untyped_storage()
                    key, nbytes = storage.data_ptr(), storage.nbytes()
                    if key not in self.refs:
                        if key in inputs:            # a view of, or in place on, an input
                            continue
                        self.refs[key] = 0
                        self.live += nbytes
                        self.peak = max(self.peak, self.live)
                    self.refs[key] += 1
                    weakref.finalize(t, self._free, key, nbytes)
                return out
        return Mode()


def per_anchor_loss(z: torch.Tensor, pos_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """The reference: the same equation, one anchor at a time."""
    losses = []
    for i in range(len(z)):
        positives = pos_mask[i].nonzero().flatten()
        if len(positives) == 0:
            continue
        logits = (z[i] @ z.T) / temperature
        others = torch.cat([logits[:i], logits[i + 1:]])
        log_denominator = torch.logsumexp(others, dim=0)
        losses.append(-(logits[positives] - log_denominator).mean())
    return torch.stack(losses).mean()


def bench_loss(batches, repeats: int, device) -> list[dict]:
    rows = []
    for b in batches:
        g = torch.Generator().manual_seed(0)
        z0 = torch.randn(2 * b, 128, generator=g).to(device)
        labels = torch.randint(0, 10, (b,), generator=g).to(device)
        mask = supcon_mask(torch.cat([labels, labels]))

        def run(loss_fn, z0=z0, mask=mask):
            z = F.normalize(z0.clone().requires_grad_(True), dim=1)
            loss_fn(z, mask, 0.1).backward()
        fast, slow = median_time(lambda: run(contrastive_loss), repeats), median_time(lambda: run(per_anchor_loss), repeats)
        peaks = {}
        for name, fn in (("masked", contrastive_loss), ("loop", per_anchor_loss)):
            with PeakMemory() as memory:
                run(fn)
            peaks[f"{name}_peak_mb"] = memory.peak / 2 ** 20
        rows.append({"batch": b, "masked_s": fast, "loop_s": slow, "ratio": slow / fast, **peaks})
    return rows


def matmul_peak_flops(device: torch.device, n: int, repeats: int) -> float:
    """Measured peak: FLOP/s of an n x n x n matmul (bf16 on a GPU, float32 on a CPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))

    def run():
        for _ in range(10):
            a @ b
        sync(device)
    return 10 * 2 * n ** 3 / median_time(run, repeats)


def step_flops(cfg: TrialConfig, device: torch.device) -> int:
    """Model FLOPs of one training step of the trial's objective (two views of
    cfg.optim.batch_size 32x32 images, encoder and head, forward + backward), counted by
    torch.utils.flop_counter on the real modules (augmentation and loss excluded)."""
    from torch.utils.flop_counter import FlopCounterMode

    from trainables.trial import build_trial_objective
    objective = build_trial_objective(cfg, (3, 32, 32), 10, device, torch.Generator(device).manual_seed(0))
    x = torch.randn(2 * cfg.optim.batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        objective.head(objective.encoder(x)).sum().backward()
    return counter.get_total_flops()
