"""Trial configuration: one frozen dataclass per concern, composed into TrialConfig.

Ray and Optuna speak in flat dotted keys ("loss.k", "data.imbalance_ratio");
`TrialConfig.from_flat` builds the nested config from them and rejects unknown
keys and out-of-range values with a message naming the key and the allowed range.
Nothing mutates a config once built; derived values are properties.

The names a config accepts come from the registries (trainables.data.DATASETS,
trainables.models.ENCODERS, trainables.objectives.LOSSES,
trainables.selection.STRATEGIES), imported when a config is checked: those
modules need torch, this one must not at import time. The presets and their
precedence are in trainables.presets.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field

from trainables.checks import LIMITS, check, coerce, within
from trainables.config_eval import EvalConfig, ProbeConfig, SelectConfig

@dataclass(frozen=True)
class DataConfig:
    """Which images, and how imbalanced the train set is.

    Per-class split sizes of None take the dataset's own default. `total` fixes
    the size of the long-tailed train set (the paper's LT series); None uses
    the standard recipe with n_max = the pool's images per class.

    `imagelist` takes its imbalance from a list instead: the class counts n_c of
    `profile_list` (default: the train list itself) become n_c^p rescaled to the
    same total, p = `count_power` (1: the list's own profile; 0: balanced), drawn
    from the train list (the paper's series: ImageNet-LT's profile drawn from the
    full ImageNet list). `imbalance_ratio` and `total` are unused there.
    """
    dataset: str = "shapes"
    data_root: str | None = None
    imbalance_ratio: float = 10.0
    total: int | None = None
    train_per_class: int | None = None
    val_per_class: int | None = None
    test_per_class: int | None = None
    data_seed: int = 0          # the dataset itself (generation, splits); fixed across trials
    image_size: int | None = None      # imagelist: side of the cached square images (default 64)
    image_root: str | None = None      # imagelist: paths in the lists are relative to it (default data_root)
    train_list: str | None = None      # imagelist: list files, relative to data_root unless absolute
    val_list: str | None = None
    test_list: str | None = None
    profile_list: str | None = None
    cache_dir: str | None = None       # imagelist: decoded-image cache (default IMAGE_ROOT/.cache)
    count_power: float = 1.0
    download: bool = False             # cifar: fetch (and checksum) through torchvision when online

    def __post_init__(self):
        from trainables.data import DATASETS
        check(self.dataset in DATASETS, "data.dataset", self.dataset, f"one of {tuple(DATASETS)}")
        within("data.imbalance_ratio", self.imbalance_ratio, 1, LIMITS["data.imbalance_ratio"])
        within("data.total", self.total, 1, LIMITS["data.total"], none_ok=True)
        for name, low in (("train_per_class", 1), ("val_per_class", 0), ("test_per_class", 1)):
            within(f"data.{name}", getattr(self, name), low, LIMITS["data.per_class"], none_ok=True)
        within("data.image_size", self.image_size, 8, LIMITS["data.image_size"], none_ok=True)
        within("data.data_seed", self.data_seed, 0, LIMITS["seed"])
        check(0 <= self.count_power <= 1, "data.count_power", self.count_power, "in [0, 1]")
        root = DATASETS[self.dataset].needs_root
        check(root is None or self.data_root is not None, "data.data_root", self.data_root, root)


@dataclass(frozen=True)
class ModelConfig:
    """The encoder f (its pooled output is what the probe sees) and the projection head.

    arch "pixels" is the raw-pixel baseline (no parameters; needs optim.epochs=0).
    """
    arch: str = "cnn"
    width: int | None = None    # channels of the first stage, doubled per stage; None: the arch's default
    proj_dim: int = 128         # output of the contrastive projection head
    # torch.compile the encoder; takes effect on a GPU only (the compile costs more than
    # it saves on short CPU trials), and pays off on long trials only.
    compile: bool = False

    def __post_init__(self):
        from trainables.models import ENCODERS
        check(self.arch in ENCODERS, "model.arch", self.arch, f"one of {tuple(ENCODERS)}")
        within("model.width", self.width, 1, LIMITS["model.width"], none_ok=True)
        within("model.proj_dim", self.proj_dim, 1, LIMITS["model.proj_dim"])


KCL_VARIANTS = ("harness", "balfeat")
CLUSTER_METHODS = ("kmeans", "sinkhorn")       # pkcl's pseudo-labels: trainables.clustering


@dataclass(frozen=True)
class LossConfig:
    """The pretraining loss, one of trainables.objectives.LOSSES; which of these keys a
    loss reads is declared there (k, mode: kcl only; queue_size, momentum, kcl_variant:
    its queue mode only)."""
    name: str = "kcl"
    # 0.3, not the literature's 0.1: at CPU batch sizes (128) with SGD, t = 0.1 left
    # KCL and SupCon near log(2B - 1) for several epochs on `shapes` (kNN 0.22 after
    # 6 epochs, against 0.44 at t = 0.3). Sweeps search it anyway.
    temperature: float = 0.3
    k: int = 6
    mode: str = "batch"         # kcl positives from the batch, or from a MoCo-style queue
    queue_size: int = 4096
    momentum: float = 0.99      # momentum encoder of the queue mode
    # queue mode: "harness" (both directions, positives drawn at random from the batch's and
    # the queue's keys) or "balfeat" (BalFeat's official loss; trainables.objectives.QueueKCL)
    kcl_variant: str = "harness"
    # pkcl (trainables.objectives.PseudoKCL): M clusters of the train set's features, more than
    # the classes one expects (their number is unknown); SimCLR for the first warmup_epochs,
    # then re-clustered every recluster_every epochs, by k-means or a size-balanced assignment
    clusters: int = 50
    warmup_epochs: int = 25
    recluster_every: int = 5
    cluster_method: str = "kmeans"

    def __post_init__(self):
        from trainables.objectives import LOSSES
        check(self.name in LOSSES, "loss.name", self.name, f"one of {tuple(LOSSES)}")
        within("loss.temperature", self.temperature, 0, LIMITS["temperature"], open_low=True)
        within("loss.k", self.k, 0, LIMITS["loss.k"])
        modes = tuple(LOSSES[self.name].modes)
        check(self.mode in modes, "loss.mode", self.mode, f"one of {modes} with loss.name={self.name!r}")
        within("loss.queue_size", self.queue_size, 1, LIMITS["loss.queue_size"])
        check(0 <= self.momentum < 1, "loss.momentum", self.momentum, "in [0, 1)")
        check(self.kcl_variant in KCL_VARIANTS, "loss.kcl_variant", self.kcl_variant, f"one of {KCL_VARIANTS}")
        within("loss.clusters", self.clusters, 2, LIMITS["loss.clusters"])
        within("loss.warmup_epochs", self.warmup_epochs, 0, LIMITS["epochs"])
        within("loss.recluster_every", self.recluster_every, 1, LIMITS["epochs"])
        check(self.cluster_method in CLUSTER_METHODS, "loss.cluster_method", self.cluster_method,
              f"one of {CLUSTER_METHODS}")


@dataclass(frozen=True)
class OptimConfig:
    """Pretraining: SGD with momentum, a cosine (or constant) schedule, in epochs.

    epochs=0 skips pretraining: the untrained-encoder baseline.
    """
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"

    def __post_init__(self):
        within("optim.epochs", self.epochs, 0, LIMITS["epochs"])
        within("optim.batch_size", self.batch_size, 2, LIMITS["optim.batch_size"])
        within("optim.lr", self.lr, 0, LIMITS["lr"], open_low=True)
        check(0 <= self.momentum < 1, "optim.momentum", self.momentum, "in [0, 1)")
        within("optim.weight_decay", self.weight_decay, 0, LIMITS["weight_decay"])
        check(self.schedule in ("cosine", "constant"), "optim.schedule", self.schedule,
               "'cosine' or 'constant'")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs. `seed` drives the head/tail order, the
    long-tailed draw, initialisation, batches and augmentation."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    seed: int = 0
    device: str = "auto"        # "auto" = cuda when available, else cpu

    def __post_init__(self):
        check(self.model.arch != "pixels" or self.optim.epochs == 0, "optim.epochs",
               self.optim.epochs, "0 with model.arch='pixels' (it has nothing to train)")
        within("seed", self.seed, 0, LIMITS["seed"])
        check(self.loss.name != "pkcl" or self.loss.k == 0 or self.optim.epochs == 0
              or self.loss.warmup_epochs < self.optim.epochs, "loss.warmup_epochs", self.loss.warmup_epochs,
              f"below optim.epochs={self.optim.epochs} for pkcl (or it never clusters: SimCLR under another name)")
        check(re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", self.device) is not None, "device", self.device,
              "'auto', 'cpu', 'cuda' or 'cuda:N' (N a device number >= 0)")

    @property
    def group_rule(self) -> str:
        """many/medium/few: the OLTR thresholds for list datasets, count-ranked thirds otherwise."""
        if self.eval.groups != "auto":
            return self.eval.groups
        return "oltr" if self.data.dataset == "imagelist" else "thirds"

    @classmethod
    def from_flat(cls, flat: dict[str, typing.Any]) -> "TrialConfig":
        """Build from dotted keys; unknown keys and invalid values raise ValueError."""
        unknown = sorted(set(flat) - set(flat_keys()))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; allowed: {sorted(flat_keys())}")
        kwargs: dict[str, typing.Any] = {}
        for key, value in flat.items():
            section, _, name = key.rpartition(".")
            if section:
                kwargs.setdefault(section, {})[name] = coerce(_SECTIONS[section], name, value, key)
            else:
                kwargs[key] = coerce(cls, key, value, key)
        return cls(**{k: _SECTIONS[k](**v) if k in _SECTIONS else v for k, v in kwargs.items()})

    def to_flat(self, active_only: bool = False) -> dict[str, typing.Any]:
        """The resolved config as dotted keys (the inverse of from_flat).

        active_only: keys this trial's loss ignores (k for SimCLR, the temperature
        for CE, ...) become None, so that results never show a knob that did nothing.
        """
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                out.update({f"{f.name}.{k}": v for k, v in dataclasses.asdict(value).items()})
            else:
                out[f.name] = value
        if active_only:
            out.update(dict.fromkeys(self.inactive_keys()))
        return out

    def inactive_keys(self) -> list[str]:
        """Config keys that have no effect on this trial: the loss-specific keys its loss
        does not read, the dataset-specific keys its dataset does not read (both declared
        in their registries), and the selection's knobs when it selects nothing."""
        from trainables.data import DATA_KEYS, DATASETS
        from trainables.objectives import LOSS_KEYS, LOSSES
        active = LOSSES[self.loss.name].keys(self.loss.mode) | set(DATASETS[self.data.dataset].reads)
        inactive = sorted((LOSS_KEYS | DATA_KEYS) - active)
        if not self.select.budget_list:
            inactive += self.select.keys()
        return inactive


_SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(TrialConfig)
             if f.default_factory is not dataclasses.MISSING}


def flat_keys() -> list[str]:
    """Every dotted key `from_flat` accepts."""
    return list(TrialConfig().to_flat())
