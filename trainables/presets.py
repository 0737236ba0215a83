"""Presets, and the one precedence by which a trial config is resolved from them.

Both entry points, `python -m trainables.trial` and `python -m study.sweep`, build
a trial's flat config with `resolve`; later layers win:

    1. base      the study's base config (the trial command has none)
    2. budget    the machine's preset: SMOKE with --smoke; a sweep's CPU or GPU budget
    3. dataset   --dataset: the dataset's name and its literature preset (not with
                 --smoke; on a CPU without the literature's epoch count, so the
                 budget's length stands); a dataset other than shapes also drops the
                 base's data.total, which is sized for shapes' pool
    4. --set KEY=VALUE
    5. flags     the command's shorthand flags (--epochs, --data-root, --loss, --k, ...)

then `probe.preset` (if a layer set it) replaces the probe keys with its PROBE_PRESETS
values, except those --set names explicitly.
"""

from __future__ import annotations

import json

# Defaults that come with --dataset, from the literature (sources in docs/data.md):
# KCL's own code (bingykang/BalFeat: k = 6, t = 0.07, batch 256, lr 0.1, wd 5e-4,
# 200 epochs, cosine) and the long-tail literature's CIFAR backbone (ResNet-32, as
# in PaCo's CIFAR-LT scripts). The queue is sized for CIFAR-LT's ~11-12k images,
# not ImageNet's 65,536.
_LITERATURE = {"loss.k": 6, "loss.temperature": 0.07, "optim.batch_size": 256, "optim.lr": 0.1,
               "optim.weight_decay": 5e-4, "optim.epochs": 200, "loss.queue_size": 4096,
               "loss.momentum": 0.999}
DATASET_PRESETS = {
    "cifar10": {**_LITERATURE, "model.arch": "resnet32", "data.imbalance_ratio": 100.0},
    "cifar100": {**_LITERATURE, "model.arch": "resnet32", "data.imbalance_ratio": 100.0},
    "imagelist": {**_LITERATURE, "model.arch": "resnet50", "data.image_size": 224},
}

# The published linear evaluations (`--set probe.preset=NAME`, resolved into these keys; a
# --set of one of them wins): the scripts' defaults at the commits read (docs/results.md).
# BalFeat's main_lincls.py (MoCo's, bingykang/BalFeat@7a05423): SGD lr 30, momentum 0.9, no weight
# decay, batch 256, 100 epochs, lr x0.1 at 60 and 80, RandomResizedCrop (scale 0.08-1) + flip.
# SupContrast's main_linear.py (HobbitLong/SupContrast, master): SGD lr 0.1, momentum 0.9, no
# weight decay, batch 256, 100 epochs, lr x0.2 at 60, 75 and 90, RandomResizedCrop (scale 0.2-1) + flip.
_AUGMENTED = {"probe.protocol": "augmented", "probe.momentum": 0.9, "probe.weight_decay": 0.0}
PROBE_PRESETS = {
    "balfeat": {**_AUGMENTED, "probe.lr": 30.0, "probe.batch_size": 256, "probe.epochs": 100,
                "probe.milestones": "60,80", "probe.decay": 0.1, "probe.crop_scale": 0.08},
    "supcon": {**_AUGMENTED, "probe.lr": 0.1, "probe.batch_size": 256, "probe.epochs": 100,
               "probe.milestones": "60,75,90", "probe.decay": 0.2, "probe.crop_scale": 0.2},
}

# Every entry point's --smoke: a whole trial in seconds on two CPU cores.
SMOKE = {
    "data.train_per_class": 60, "data.val_per_class": 10, "data.test_per_class": 20,
    "model.width": 8, "model.proj_dim": 32,
    "optim.epochs": 2, "optim.batch_size": 64,
    "probe.epochs": 20, "loss.queue_size": 256,
    "loss.warmup_epochs": 1, "loss.recluster_every": 1, "loss.clusters": 20,   # pkcl clusters in epoch 2
}


def parse_set(items: list[str]) -> dict:
    """["loss.k=6", "data.total=null"] -> {"loss.k": 6, "data.total": None} (values as JSON, else strings)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except ValueError:                  # not JSON, or a number too long for int(): the text
            out[key] = raw
    return out


def dataset_layer(dataset: str | None, smoke: bool, gpu: bool) -> dict:
    """Layer 3: what --dataset brings (nothing without it)."""
    if not dataset:
        return {}
    layer = {"data.dataset": dataset, **({} if smoke else DATASET_PRESETS.get(dataset, {}))}
    if dataset != "shapes":
        layer["data.total"] = None
    if not gpu:
        layer.pop("optim.epochs", None)
    return layer


def resolve(sets: dict, flags: dict, *, base: dict | None = None, budget: dict | None = None,
            dataset: str | None = None, smoke: bool = False, gpu: bool = False) -> dict:
    """The flat trial config from the five layers of the module docstring (later wins).
    sets: parsed --set values; flags: config key -> value, None meaning not given."""
    flat: dict = {}
    for layer in (base or {}, budget or {}, dataset_layer(dataset, smoke, gpu), sets,
                  {k: v for k, v in flags.items() if v is not None}):
        flat.update(layer)
    preset = PROBE_PRESETS.get(flat.get("probe.preset") or "")
    if preset:                  # the preset's values; a key --set names explicitly keeps its value
        flat.update({k: v for k, v in preset.items() if k not in sets})
    return flat
