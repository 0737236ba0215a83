"""The training loop reads nothing back from the device except once per epoch.

On a GPU every `.item()`, `float(t)`, `bool(t)`, `.tolist()` and every op whose
output shape depends on the data (`nonzero`, boolean indexing, `unique`) waits for
the device. A TorchFunctionMode sees those calls on the CPU too, so this test runs
here: the number of such calls during pretraining must not grow with the number of
steps per epoch.
"""

import pytest
import torch
from torch.overrides import TorchFunctionMode

import trainables.trial as trial
from trainables.config import TrialConfig
from trainables.presets import SMOKE
from trainables.objectives import LOSSES

SYNCING = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero", "masked_select",
           "unique", "numpy", "cpu"}


class SyncCounter(TorchFunctionMode):
    """Counts calls that make the host wait for the device (by name)."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        bool_index = name == "__getitem__" and any(
            isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in _flat(args[1:]))
        if name in SYNCING or bool_index:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def _flat(items):
    for item in items:
        if isinstance(item, (tuple, list)):
            yield from _flat(item)
        else:
            yield item


def _count_syncs(monkeypatch, **flat) -> list[str]:
    counter = SyncCounter()

    def audited(*args, **kwargs):
        with counter:
            return pretrain(*args, **kwargs)
    pretrain = trial.pretrain
    monkeypatch.setattr(trial, "pretrain", audited)
    trial.run_trial(TrialConfig.from_flat({**SMOKE, "probe.epochs": 1, **flat}))
    monkeypatch.setattr(trial, "pretrain", pretrain)
    return counter.calls


@pytest.mark.parametrize("loss", [*LOSSES, "kcl-queue"])
def test_syncs_per_epoch_do_not_grow_with_the_steps_per_epoch(monkeypatch, loss):
    flat = {"loss.name": "kcl", "loss.mode": "queue"} if loss == "kcl-queue" else {"loss.name": loss}
    few = _count_syncs(monkeypatch, **flat, **{"optim.batch_size": 200})     # 3 steps per epoch
    many = _count_syncs(monkeypatch, **flat, **{"optim.batch_size": 40})     # 15 steps per epoch
    assert sorted(many) == sorted(few), f"{loss}: per-step host-device syncs {sorted(many)} vs {sorted(few)}"
    assert len(few) > 0            # the once-per-epoch read is seen: the audit is live
